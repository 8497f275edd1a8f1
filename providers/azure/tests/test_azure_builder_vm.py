"""A full Builder run of AIB's quickquickstart 3 template (re-customize an image into a gallery) on the tiny guest.

Real QEMU under TCG builds the image; the SharedImage target goes through the Azure provider to a real Azurite
(the staging VHD) and the ARM test server (a test server, not Azure) for the gallery image version and its
replication to both regions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from aib_provider_azure import StaticTokenCredential
from aib_provider_azure import hooks as azure_hooks
from aib_provider_azure.settings import AzureSettings
from aib_provider_azure.sharedkey import SharedKeyAuth
from aib_provider_qemu import hooks as qemu_hooks  # the test suite installs every provider
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.events import TargetStatus
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fixtures_vm import read_ext4_file
from aib_sdk.testing.recorder import EventRecorder

pytestmark = [pytest.mark.anyio, pytest.mark.vm, pytest.mark.timeout(1200)]

SUB, RG = "0000-1111", "aibrg"
DEFINITION = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/galleries/aibgal/images/tiny"


def quickstart_3() -> dict:
    """Azure/azvmimagebuilder quickquickstarts/3 (helloImageTemplateforReCustomization.json), verbatim."""
    return json.loads((Path(__file__).with_name("data") / "helloImageTemplateforReCustomization.json").read_text())


async def test_quickstart_3_publishes_a_gallery_version(
    azurite, arm, azure_config, tmp_path: Path, tiny_guest_source, tiny_guest_cache: Path
) -> None:
    arm.add(
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/galleries/aibgal", {"location": "eastus"}
    )
    arm.add(DEFINITION, {"location": "eastus", "properties": {"osType": "Linux", "osState": "Generalized"}})
    settings = AzureSettings.from_config(Config({"azure": azure_config}, {}))
    staged = tmp_path / "staged.vhd"
    original = arm.handle

    def keep_staged_vhd(method, target, headers, raw):  # what ARM is asked to publish, read back from Azurite
        if method == "PUT" and "/versions/" in target:
            uri = json.loads(raw)["properties"]["storageProfile"]["osDiskImage"]["source"]["uri"]
            ref = settings.parse_blob_uri(uri)
            with httpx.stream("GET", uri, auth=SharedKeyAuth(ref.account.name, ref.account.key)) as response:
                with open(staged, "wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
                meta = response.headers.get("x-ms-meta-aibcomplete")
            assert meta == "true"
        return original(method, target, headers, raw)

    arm.handle = keep_staged_vhd
    recorder = EventRecorder()
    params = {
        "subscriptionID": SUB,
        "rgName": RG,
        "srcImageName": "unused",
        "sharedImageGalName": "aibgal",
        "imageDefName": "tiny",
        "runOutputName": "sigOutput",
        "region1": "eastus",
        "region2": "westus",
        "imgBuilderId": "/subscriptions/0000-1111/resourcegroups/aibrg/providers/Microsoft.ManagedIdentity/"
        "userAssignedIdentities/aib",
    }
    env = dict(os.environ, AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(tiny_guest_cache))
    options = BuildOptions(
        params=params,
        source=tiny_guest_source,
        config=Config({"azure": azure_config}, env),
        plugins=PluginManager(entry_points=False, plugins=[qemu_hooks, azure_hooks]),
        build_host="qemu",
        credential=StaticTokenCredential("test-token-not-a-secret"),
        on_event=recorder,
        timeout=900,
        template_name="quickstart3",
    )
    result = await Builder(quickstart_3(), options=options).run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    output = result.run_outputs["sigOutput"]
    assert output.artifact_id == f"{DEFINITION}/versions/0.0.1"
    version = arm.resource(output.artifact_id)
    assert version is not None and version["properties"]["provisioningState"] == "Succeeded"
    assert [r["name"] for r in version["properties"]["publishingProfile"]["targetRegions"]] == ["eastus", "westus"]
    assert version["tags"] == {"source": "azureVmImageBuilder", "baseosimg": "ubuntu1804"}
    regions = {e.region for e in recorder.of_kind(TargetStatus) if e.state == "Succeeded" and e.region}
    assert {"eastus", "westus"} <= regions
    data = staged.read_bytes()
    assert data[-512:].startswith(b"conectix") and (len(data) - 512) % (1024 * 1024) == 0
    assert await read_ext4_file(staged, "vpc", "/buildArtifacts2/imageBuilder.md", tmp_path) == b""
