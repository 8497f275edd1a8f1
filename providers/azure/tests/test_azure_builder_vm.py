"""A full Builder run of AIB's quickquickstart 3 template (re-customize an image into a gallery) on the tiny guest.

Real QEMU under TCG builds the image; the SharedImage target goes through the Azure provider to a real Azurite
(the staging VHD) and the ARM test server (a test server, not Azure) for the gallery image version and its
replication to both regions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aib_sdk.builder import Builder
from aib_sdk.events import TargetStatus
from aib_sdk.testing.corpus import Corpus
from aib_sdk.testing.fixtures_vm import read_ext4_file
from aib_sdk.testing.recorder import EventRecorder

pytestmark = [pytest.mark.anyio, pytest.mark.vm, pytest.mark.timeout(1200)]

SUB, RG = "0000-1111", "aibrg"
DEFINITION = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/galleries/aibgal/images/tiny"


QUICKSTART_3 = (  # Azure/azvmimagebuilder quickquickstarts/3, verbatim from the conformance corpus
    "azvmimagebuilder__quickquickstarts__3_Customize_a_Managed_Image_and_Import_into_SIG__"
    "helloImageTemplateforReCustomization.json"
)


async def test_quickstart_3_publishes_a_gallery_version(
    arm, add_gallery, version_puts, vm_build_options, tmp_path: Path, aib_conformance_corpus: Corpus
) -> None:
    add_gallery(DEFINITION)
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
    options = vm_build_options("quickstart3", recorder, params=params)
    result = await Builder(aib_conformance_corpus.template(QUICKSTART_3), options=options).run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    output = result.run_outputs["sigOutput"]
    assert output.artifact_id == f"{DEFINITION}/versions/0.0.1"
    version = arm.resource(output.artifact_id)
    assert version is not None and version["properties"]["provisioningState"] == "Succeeded"
    assert [r["name"] for r in version["properties"]["publishingProfile"]["targetRegions"]] == ["eastus", "westus"]
    assert version["tags"] == {"source": "azureVmImageBuilder", "baseosimg": "ubuntu1804"}
    regions = {e.region for e in recorder.of_kind(TargetStatus) if e.state == "Succeeded" and e.region}
    assert {"eastus", "westus"} <= regions
    assert version_puts.is_fixed_vhd()
    assert await read_ext4_file(version_puts.vhd, "vpc", "/buildArtifacts2/imageBuilder.md", tmp_path) == b""
