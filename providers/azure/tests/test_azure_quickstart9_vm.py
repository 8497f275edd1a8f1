"""The project's copy of AIB's quickquickstart 9 (``data/quickstart9``) on the tiny guest: the targetRegions path.

The copy differs from Azure/azvmimagebuilder's template only in its three checksums (our own offline scripts,
served through ``uri_map`` at the template's unchanged GitHub URLs) and an offline ``InstallUpgrades`` line (see
``data/quickstart9/README.md``). Real QEMU under TCG builds the image; the SharedImage target goes through the Azure
provider to a real Azurite (the staging VHD) and the ARM test server (a test server, not Azure), which receives
``targetRegions`` with a replica count and a storage account type per region.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from aib_sdk.builder import Builder
from aib_sdk.events import TargetStatus
from aib_sdk.fetch import apply_uri_map
from aib_sdk.models.loader import read_json_file, validate_document
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.routing import local_file_path
from aib_sdk.testing.fixtures_vm import read_ext4_file
from aib_sdk.testing.recorder import EventRecorder

DATA = Path(__file__).with_name("data") / "quickstart9"
TEMPLATE = DATA / "helloImageTemplate.json"
SCRIPTS = DATA / "scripts"
GITHUB = "https://raw.githubusercontent.com/danielsollondon/azvmimagebuilder/master/quickquickstarts/"
URI_MAP = {GITHUB: f"{SCRIPTS.as_uri()}/"}
ORIGINAL = (
    Path(__file__).resolve().parents[3]
    / ".."
    / "shared"
    / "conformance"
    / "aib-templates"
    / "templates"
    / "azvmimagebuilder__quickquickstarts__9_Setting_up_a_Trigger_with_a_Custom_Linux_Image__helloImageTemplate.json"
)

SUB, RG, GALLERY, IMAGE, OUTPUT = "0000-1111", "aibrg", "aibgal", "tiny", "sigOutput"
DEFINITION = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/galleries/{GALLERY}/images/{IMAGE}"
PARAMS = {
    "subscriptionID": SUB,
    "rgName": RG,
    "acgName": GALLERY,
    "imageDefName": IMAGE,
    "runOutputName": OUTPUT,
    "region1": "eastus",
    "region2": "westus",
    "imgBuilderId": f"/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft.ManagedIdentity/"
    "userAssignedIdentities/aib",
}
EXPECTED_REGIONS = [
    {"name": "eastus", "regionalReplicaCount": 1, "storageAccountType": "Premium_LRS"},
    {"name": "westus", "regionalReplicaCount": 2, "storageAccountType": "Standard_ZRS"},
]


def quickstart_9() -> dict[str, Any]:
    return json.loads(TEMPLATE.read_text())


def downloads(template: dict[str, Any]) -> list[tuple[str, str]]:
    """(URI, sha256Checksum) of every step that downloads something."""
    steps = template["properties"]["customize"]
    return [(s.get("scriptUri") or s["sourceUri"], s["sha256Checksum"]) for s in steps if "sha256Checksum" in s]


def test_copy_validates_without_errors() -> None:
    plugins = PluginManager(entry_points=False)
    for params in (None, PARAMS):
        errors, warnings = validate_document(read_json_file(TEMPLATE), plugins=plugins, params=params)
        assert [str(e) for e in errors] == []
        assert all(w.severity == "warning" for w in warnings)


def test_checksums_match_our_files() -> None:
    found = downloads(quickstart_9())
    assert len(found) == 3
    for uri, sha256 in found:
        mapped = apply_uri_map(uri, URI_MAP)
        assert mapped != uri, f"{uri} is not served from {SCRIPTS}"
        path = local_file_path(mapped)
        assert path.is_relative_to(SCRIPTS) and path.is_file(), path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256, f"{path.name}: update its sha256Checksum"


def test_copy_differs_from_the_original_only_where_documented() -> None:
    assert ORIGINAL.is_file(), f"conformance corpus not found at {ORIGINAL} (shared/ beside the checkout)"
    original = json.loads(ORIGINAL.read_text())
    ours = quickstart_9()
    expected = copy.deepcopy(original)
    steps = expected["properties"]["customize"]
    sums = dict(downloads(ours))
    for step in steps:
        if "sha256Checksum" in step:
            step["sha256Checksum"] = sums[step.get("scriptUri") or step["sourceUri"]]
        if step["name"] == "InstallUpgrades":
            assert step["inline"] == ["sudo apt install unattended-upgrades"]
            step["inline"] = ["sudo sh -c 'echo unattended-upgrades > /etc/aib-upgrades'"]
    assert ours == expected
    regions = ours["properties"]["distribute"][0]["targetRegions"]
    assert regions == original["properties"]["distribute"][0]["targetRegions"]


@pytest.mark.anyio
@pytest.mark.vm
@pytest.mark.timeout(1200)
async def test_quickstart_9_publishes_to_target_regions(
    arm, add_gallery, version_puts, vm_build_options, tmp_path: Path
) -> None:
    add_gallery(DEFINITION)
    recorder = EventRecorder()
    options = vm_build_options("quickstart9", recorder, params=PARAMS, uri_map=URI_MAP)
    result = await Builder(quickstart_9(), options=options).run()
    assert result.run_state == "Succeeded", result.last_run_status.message

    # The version request: one PUT, accepted by the test server, with both regions as the template asks.
    assert len(version_puts.bodies) == 1
    assert version_puts.bodies[0]["location"] == "eastus"
    assert version_puts.bodies[0]["properties"]["publishingProfile"]["targetRegions"] == EXPECTED_REGIONS
    output = result.run_outputs[OUTPUT]
    assert output.artifact_id == f"{DEFINITION}/versions/0.0.1"
    version = arm.resource(output.artifact_id)
    assert version is not None and version["properties"]["provisioningState"] == "Succeeded"
    assert version["properties"]["publishingProfile"]["targetRegions"] == EXPECTED_REGIONS

    # Each region's replication reported, and its last state is Succeeded.
    last: dict[str, str] = {}
    for event in recorder.of_kind(TargetStatus):
        if event.run_output_name == OUTPUT and event.region:
            last[event.region] = event.state
    assert last == {"eastus": "Succeeded", "westus": "Succeeded"}
    done = [e for e in recorder.of_kind(TargetStatus) if e.run_output_name == OUTPUT and e.region is None]
    assert done[-1].state == "Succeeded" and done[-1].artifact_id == output.artifact_id

    # What the scripts, the File step and the inline steps left on the published disk.
    assert version_puts.is_fixed_vhd()
    raw = tmp_path / "published.raw"
    await anyio.run_process(["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(version_puts.vhd), str(raw)])
    index = (SCRIPTS / "exampleArtifacts" / "buildArtifacts" / "index.html").read_bytes()
    expected_files = {
        "/buildScripts/imageBuilder.md": b"customizeScript.sh ran\n",
        "/buildScripts/imageBuilder2.md": b"customizeScript2.sh ran\n",
        "/tmp/index.html": index,
        "/buildArtifacts/index.html": index,
        "/etc/aib-upgrades": b"unattended-upgrades\n",
    }
    for path, content in expected_files.items():
        assert await read_ext4_file(raw, "raw", path, tmp_path) == content, path
