"""AIB's quickquickstart 9 on the tiny guest: the targetRegions path.

The template is read from the conformance corpus (``aib_conformance_corpus``; skipped without it) and changed in
memory only where ``data/quickstart9/README.md`` documents: its three checksums (our own offline scripts, served
through ``uri_map`` at the template's unchanged GitHub URLs) and an offline ``InstallUpgrades`` line. Real QEMU under
TCG builds the image; the SharedImage target goes through the Azure provider to a real Azurite (the staging VHD) and
the ARM test server (a test server, not Azure), which receives ``targetRegions`` with a replica count and a storage
account type per region.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio
import pytest

from aib_sdk.builder import Builder
from aib_sdk.events import TargetStatus
from aib_sdk.fetch import apply_uri_map
from aib_sdk.models.loader import validate_document
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.routing import local_file_path
from aib_sdk.testing.corpus import Corpus
from aib_sdk.testing.fixtures_vm import read_ext4_file
from aib_sdk.testing.recorder import EventRecorder

DATA = Path(__file__).with_name("data") / "quickstart9"
SCRIPTS = DATA / "scripts"
GITHUB = "https://raw.githubusercontent.com/danielsollondon/azvmimagebuilder/master/quickquickstarts/"
URI_MAP = {GITHUB: f"{SCRIPTS.as_uri()}/"}
ORIGINAL = (
    "azvmimagebuilder__quickquickstarts__9_Setting_up_a_Trigger_with_a_Custom_Linux_Image__helloImageTemplate.json"
)
APT_LINE = "sudo apt install unattended-upgrades"
OFFLINE_LINE = "sudo sh -c 'echo unattended-upgrades > /etc/aib-upgrades'"

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


def offline_file(uri: str) -> Path:
    """The file of ours that ``URI_MAP`` serves for a GitHub URI of the template."""
    return local_file_path(apply_uri_map(uri, URI_MAP))


def quickstart_9(corpus: Corpus) -> dict[str, Any]:
    """The corpus's quickstart 9 with the documented changes applied (see data/quickstart9/README.md)."""
    template = corpus.template(ORIGINAL)
    for step in template["properties"]["customize"]:
        if "sha256Checksum" in step:
            step["sha256Checksum"] = hashlib.sha256(offline_file(downloaded(step)).read_bytes()).hexdigest()
        if step.get("name") == "InstallUpgrades" and step.get("inline") == [APT_LINE]:
            step["inline"] = [OFFLINE_LINE]
    return template


def downloaded(step: dict[str, Any]) -> str:
    uri: str = step.get("scriptUri") or step["sourceUri"]
    return uri


def test_adapted_template_validates_without_errors(aib_conformance_corpus: Corpus) -> None:
    plugins = PluginManager(entry_points=False)
    for params in (None, PARAMS):
        errors, warnings = validate_document(quickstart_9(aib_conformance_corpus), plugins=plugins, params=params)
        assert [str(e) for e in errors] == []
        assert all(w.severity == "warning" for w in warnings)


def test_adaptation_changes_only_what_is_documented(aib_conformance_corpus: Corpus) -> None:
    original = aib_conformance_corpus.template(ORIGINAL)
    ours = quickstart_9(aib_conformance_corpus)
    changed: list[tuple[str, str]] = []
    for before, after in zip(original["properties"]["customize"], ours["properties"]["customize"], strict=True):
        changed += [
            (after["name"], key) for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)
        ]
        if "sha256Checksum" in before:  # every download is served from our scripts/, with its own checksum
            path = offline_file(downloaded(before))
            assert path.is_relative_to(SCRIPTS) and path.is_file(), path
    assert changed == [
        ("RunScriptFromSource", "sha256Checksum"),
        ("CheckSumCompareShellScript", "sha256Checksum"),
        ("downloadBuildArtifacts", "sha256Checksum"),
        ("InstallUpgrades", "inline"),
    ]
    original["properties"]["customize"] = ours["properties"]["customize"]
    assert ours == original  # nothing outside the steps differs (targetRegions, identity, placeholders …)


@pytest.mark.anyio
@pytest.mark.vm
@pytest.mark.timeout(1200)
async def test_quickstart_9_publishes_to_target_regions(
    arm, add_gallery, version_puts, vm_build_options, tmp_path: Path, aib_conformance_corpus: Corpus
) -> None:
    add_gallery(DEFINITION)
    recorder = EventRecorder()
    options = vm_build_options("quickstart9", recorder, params=PARAMS, uri_map=URI_MAP)
    result = await Builder(quickstart_9(aib_conformance_corpus), options=options).run()
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
