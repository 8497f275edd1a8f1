"""The rehearsal profile: real AIB quickstart templates, unchanged, built offline with ``aib build --profile local``.

The templates come from the conformance corpus (``aib_conformance_corpus``; skipped without it). Only ``--param``,
``--source`` and ``--map-uri`` adapt them: Azure ids become ``/subscriptions/local/…`` ids of the
local gallery, the tiny test guest replaces the marketplace/gallery source, and GitHub raw URLs are served from
``tests/data/rehearsal/`` (offline stand-ins at the same relative paths). Everything runs in-process through
``aib_sdk.cli.main`` against the real Builder, QEMU guest and gallery on disk.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from aib_sdk.cli import main
from aib_sdk.testing.corpus import Corpus
from aib_sdk.testing.fixtures_vm import read_ext4_file

SIG_FROM_SIG = (
    "azvmimagebuilder__quickquickstarts__8_Creating_a_Custom_Linux_Shared_Image_Gallery_"
    "Image_from_SIG__helloImageTemplateforSIGfromSIG.json"
)
RECUSTOMIZE = (
    "azvmimagebuilder__quickquickstarts__3_Customize_a_Managed_Image_and_Import_into_SIG__"
    "helloImageTemplateforReCustomization.json"
)
TO_VHD = "azvmimagebuilder__quickquickstarts__4_Creating_a_Custom_Linux_Image_to_VHD__helloImageTemplateVHD.json"
REHEARSAL_DATA = Path(__file__).resolve().parent / "data" / "rehearsal"
MAP_URI = f"https://raw.githubusercontent.com/={REHEARSAL_DATA.as_uri()}/"

RG, GALLERY, DEFINITION, OUTPUT = "imagesRG", "rehearsalSIG", "ubuntuLike", "sigOutput"
GALLERY_ID = f"/subscriptions/local/resourceGroups/{RG}/providers/Microsoft.Compute/galleries/{GALLERY}"
DEF_ID = f"{GALLERY_ID}/images/{DEFINITION}"
REGIONS = ("westus2", "eastus")
PARAMS = {
    "subscriptionID": "00000000-1111-2222-3333-444444444444",
    "rgName": RG,
    "sharedImageGalName": GALLERY,
    "imageDefName": DEFINITION,
    "runOutputName": OUTPUT,
    "region1": REGIONS[0],
    "region2": REGIONS[1],
    "imgBuilderId": "/subscriptions/x/resourceGroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/z",
}
JSON_KEYS = {"runId", "templateName", "lastRunStatus", "runOutputs", "source", "stagingDirectory"}
STATUS_KEYS = {"runState", "runSubState", "message", "startTime", "endTime"}


@dataclass
class Aib:
    """``aib …`` run in-process with AIB_HOME, AIB_CACHE and AIB_GALLERY_ROOT under ``tmp_path``."""

    capsys: pytest.CaptureFixture[str]
    gallery_root: Path
    tmp_path: Path
    corpus: Corpus

    def template(self, name: str) -> Path:
        """The corpus file ``name``, built unchanged."""
        return self.corpus.root / "templates" / name

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(list(argv))
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def build(self, template: str, *extra: str, params: dict[str, str] | None = None) -> tuple[int, str, str]:
        """``aib build TEMPLATE --profile local --param … --map-uri … --json --progress none EXTRA…``."""
        argv = [
            "build",
            str(self.template(template)),
            "--profile",
            "local",
            "--map-uri",
            MAP_URI,
            "--json",
            "--progress",
            "none",
            "--timeout",
            "10m",
        ]
        for name, value in (PARAMS if params is None else params).items():
            argv += ["--param", f"{name}={value}"]
        return self(*argv, *extra)

    def create_definition(self) -> None:
        """``aib gallery create`` and ``aib gallery definition create`` for the templates' target."""
        code, out, err = self("gallery", "create", GALLERY, "--resource-group", RG, "--location", REGIONS[0])
        assert code == 0, err
        assert out.strip() == GALLERY_ID
        code, out, err = self(
            "gallery",
            "definition",
            "create",
            GALLERY,
            DEFINITION,
            "--resource-group",
            RG,
            "--publisher",
            "rehearsal",
            "--offer",
            "tiny",
            "--sku",
            "busybox",
            "--json",
        )
        assert code == 0, err
        assert json.loads(out)["id"] == DEF_ID

    def show(self, resource_id: str) -> dict[str, Any]:
        code, out, err = self("gallery", "show", resource_id)
        assert code == 0, err
        shown: dict[str, Any] = json.loads(out)
        return shown


@pytest.fixture
def aib(
    tmp_path: Path,
    tiny_guest_cache: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    aib_conformance_corpus: Corpus,
) -> Aib:
    root = tmp_path / "gallery"
    monkeypatch.setenv("AIB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIB_CACHE", str(tiny_guest_cache))
    monkeypatch.setenv("AIB_GALLERY_ROOT", str(root))
    monkeypatch.setenv("AIB_LOCAL_GALLERY_FSYNC", "false")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.delenv("AIB_CONFIG", raising=False)
    monkeypatch.delenv("AIB_DISABLE_PLUGINS", raising=False)
    return Aib(capsys, root, tmp_path, aib_conformance_corpus)


def source_arg(spec: dict[str, str]) -> list[str]:
    return ["--source", json.dumps(spec)]


def succeeded(code: int, out: str, err: str) -> dict[str, Any]:
    """The ``--json`` result of a successful build, with its shape checked against INTERFACES.md."""
    assert code == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out)
    assert set(result) == JSON_KEYS
    assert set(result["lastRunStatus"]) == STATUS_KEYS
    assert result["lastRunStatus"]["runState"] == "Succeeded"
    assert result["lastRunStatus"]["startTime"] < result["lastRunStatus"]["endTime"]
    assert set(result["source"]) == {"exactVersion"} and result["source"]["exactVersion"]
    assert Path(result["stagingDirectory"]).is_dir()
    assert result["templateName"] in tuple(Path(n).stem for n in (SIG_FROM_SIG, RECUSTOMIZE, TO_VHD))  # the file's stem
    for output in result["runOutputs"].values():
        assert set(output) == {"artifactId", "artifactUri", "provisioningState"}
        assert output["provisioningState"] == "Succeeded"
    return result


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_replicas(aib: Aib, version: dict[str, Any], name: str, regions: tuple[str, ...] = REGIONS) -> Path:
    """Every target region (the gallery's own first, as in Azure) holds the version under the gallery root with
    the digest its manifest records; returns the last region's disk."""
    assert version["name"] == name and version["kind"] == "galleryImageVersion"
    assert [r["region"] for r in version["regions"]] == list(regions)
    for replica in version["regions"]:
        path = Path(replica["path"])
        assert path.is_relative_to(aib.gallery_root / "regions" / replica["region"])
        assert replica["state"] == "Succeeded" and replica["sha256"] == version["artifact"]["sha256"]
        assert sha256_of(path) == replica["sha256"]
    return Path(version["regions"][-1]["path"])


def read_file(disk: Path, path: str, work: Path) -> bytes:
    work.mkdir(exist_ok=True)
    return anyio.run(read_ext4_file, disk, "qcow2", path, work)


def test_missing_params_listed_at_once(aib: Aib) -> None:
    """Without ``--param`` the build refuses to start, naming every missing parameter once (no VM is booted)."""
    code, out, err = aib("build", str(aib.template(SIG_FROM_SIG)), "--profile", "local", "--json")
    assert code == 1 and out == ""
    missing = [line.split()[1] for line in err.splitlines() if line.strip().startswith("--param ")]
    expected = [
        "sigDefImgVersionId",
        "rgName",
        "sharedImageGalName",
        "imageDefName",
        "runOutputName",
        "region1",
        "region2",
    ]
    assert sorted(m.split("=")[0] for m in missing) == sorted(expected)
    assert all(m.endswith("=VALUE") for m in missing)
    assert "subscriptionID" not in err  # --profile local maps the subscription to 'local'
    assert not (aib.tmp_path / "home" / "staging").exists()  # refused before any run started
    # With --source replacing the gallery source, its placeholder is no longer needed.
    params = {k: v for k, v in PARAMS.items() if k not in ("region2", "runOutputName")}
    code, _, err = aib.build(
        SIG_FROM_SIG, "--source", '{"type": "DiskImage", "uri": "file:///nonexistent.qcow2"}', params=params
    )
    named = {line.split()[1].split("=")[0] for line in err.splitlines() if line.strip().startswith("--param ")}
    assert code == 1 and named == {"region2", "runOutputName"}
    assert not (aib.tmp_path / "home" / "staging").exists()


@pytest.mark.vm
def test_missing_definition_prints_the_gallery_commands(aib: Aib, tiny_guest_source: dict[str, str]) -> None:
    """As in Azure, the definition must exist: the build fails before any VM boots, printing the exact
    ``aib gallery`` commands that create it, and running them makes the same build succeed."""
    code, out, err = aib.build(SIG_FROM_SIG, *source_arg(tiny_guest_source))
    assert code == 2
    result = json.loads(out)
    assert result["lastRunStatus"]["runState"] == "Failed"
    assert result["runOutputs"][OUTPUT] == {"artifactId": None, "artifactUri": None, "provisioningState": "Failed"}
    commands = sorted({line.strip() for line in err.splitlines() if line.strip().startswith("aib gallery ")})
    assert commands == [
        f"aib gallery create {GALLERY} --resource-group {RG} --location {REGIONS[0]}",
        f"aib gallery definition create {GALLERY} {DEFINITION} --resource-group {RG} --publisher local --offer "
        f"{GALLERY} --sku {DEFINITION} --os-type Linux --os-state Generalized --hyper-v-generation V1",
    ]
    assert "--create-missing" in err
    assert "nothing was built" in result["lastRunStatus"]["message"]
    assert not [p for p in aib.gallery_root.rglob("*") if p.is_file()]  # nothing published, not even a claim
    for command in commands:  # "create" sorts before "definition"
        code, _, cmd_err = aib(*shlex.split(command)[1:])
        assert code == 0, cmd_err
    assert aib.show(DEF_ID)["publisher"] == "local"
    result = succeeded(*aib.build(SIG_FROM_SIG, *source_arg(tiny_guest_source)))
    assert result["runOutputs"][OUTPUT]["artifactId"] == f"{DEF_ID}/versions/0.0.1"
    check_replicas(aib, aib.show(f"{DEF_ID}/versions/0.0.1"), "0.0.1", REGIONS)


@pytest.mark.vm
def test_rehearsal_build_publishes_to_local_gallery(aib: Aib, tiny_guest_source: dict[str, str]) -> None:
    """Quickstart 8 (SIG from SIG), unchanged: the tiny guest is customized and lands in both regions."""
    aib.create_definition()
    result = succeeded(*aib.build(SIG_FROM_SIG, *source_arg(tiny_guest_source)))
    assert result["templateName"] == Path(SIG_FROM_SIG).stem
    assert list(result["runOutputs"]) == [OUTPUT]
    assert result["runOutputs"][OUTPUT]["artifactId"] == f"{DEF_ID}/versions/0.0.1"
    version = aib.show(f"{DEF_ID}/versions/0.0.1")
    assert version["artifactTags"] == {"source": "azureVmImageBuilder", "baseosimg": "ubuntu1804"}
    assert version["runId"] == result["runId"]
    disk = check_replicas(aib, version, "0.0.1")
    assert read_file(disk, "/buildArtifacts3/imageBuilder.md", aib.tmp_path / "read") == b""  # touched
    with pytest.raises(FileNotFoundError):
        read_file(disk, "/buildArtifacts2/imageBuilder.md", aib.tmp_path / "read")
    log = Path(result["stagingDirectory"]) / "runs" / result["runId"] / "customization.log"
    assert "AddBuildArtifacts3" in log.read_text()


@pytest.mark.vm
def test_rehearsal_latest_then_continuous_patching(aib: Aib, tiny_guest_source: dict[str, str]) -> None:
    """A second run publishes 0.0.2 (Latest versioning) and ``latest`` follows it; a third template patches
    ``…/versions/latest`` and records the exact version it started from."""
    aib.create_definition()
    for number in (1, 2):
        result = succeeded(*aib.build(SIG_FROM_SIG, *source_arg(tiny_guest_source)))
        assert result["runOutputs"][OUTPUT]["artifactId"] == f"{DEF_ID}/versions/0.0.{number}"
    latest = aib.show(f"{DEF_ID}/versions/latest")
    assert latest["name"] == "0.0.2" and latest["id"] == f"{DEF_ID}/versions/0.0.2"
    code, out, _ = aib("gallery", "versions", GALLERY, DEFINITION, "--json")
    assert code == 0 and [(v["name"], v["isLatest"]) for v in json.loads(out)] == [("0.0.1", False), ("0.0.2", True)]

    patch_source = {"type": "SharedImageVersion", "imageVersionId": f"{DEF_ID}/versions/latest"}
    result = succeeded(*aib.build(RECUSTOMIZE, *source_arg(patch_source)))
    assert result["source"]["exactVersion"] == "0.0.2"
    assert result["runOutputs"][OUTPUT]["artifactId"] == f"{DEF_ID}/versions/0.0.3"
    version = aib.show(f"{DEF_ID}/versions/latest")
    assert version["sourceVersion"] == "0.0.2"
    disk = check_replicas(aib, version, "0.0.3")
    for layer in ("/buildArtifacts3/imageBuilder.md", "/buildArtifacts2/imageBuilder.md"):
        assert read_file(disk, layer, aib.tmp_path / "read") == b""


@pytest.mark.vm
def test_rehearsal_maps_script_uris_to_local_files(aib: Aib, tiny_guest_source: dict[str, str]) -> None:
    """Quickstart 4 downloads customizeScript.sh from GitHub: ``--map-uri`` serves the offline copy instead, and
    its VHD output (no ``uri``) lands in the run's staging directory."""
    params = {"runOutputName": "vhdOutput"}
    result = succeeded(*aib.build(TO_VHD, *source_arg(tiny_guest_source), params=params))
    output = result["runOutputs"]["vhdOutput"]
    run_dir = Path(result["stagingDirectory"]) / "runs" / result["runId"]
    vhd = Path(output["artifactUri"].removeprefix("file://"))
    assert output["artifactUri"].startswith("file:///") and vhd == run_dir / "vhdOutput.vhd"
    assert vhd.read_bytes()[-512:][:8] == b"conectix"  # a fixed VHD's footer
    assert "Hello World! from the aib-sdk rehearsal" in (run_dir / "customization.log").read_text()
    raw, work = aib.tmp_path / "out.raw", aib.tmp_path / "read"
    work.mkdir()

    async def read_script_output() -> bytes:
        await anyio.run_process(["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(vhd), str(raw)])
        return await read_ext4_file(raw, "raw", "/buildScripts/imageBuilder.md", work)

    assert anyio.run(read_script_output) == b"customizeScript.sh ran\n"
