"""Self-contained source disks: a header may not make the build read host files.

Attack: ``qemu-img create -f qcow2 -F raw -b <secret> evil.qcow2 1M`` as a ``DiskImage`` source (its
``sha256Checksum`` matches: the checksum covers only the header), a qcow2 with an external data file, a flat vmdk
whose extent is a host file, a missing backing file. Each is refused with one line that says "backing" and how to
flatten; legitimate disks of every format still resolve.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from aib_provider_qemu.url_source import DiskImageSource, UrlDiskSource
from aib_sdk import disks
from aib_sdk.cli import main
from aib_sdk.config import Config
from aib_sdk.errors import SourceError
from aib_sdk.options import BuildOptions
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.recorder import EventRecorder

pytestmark = pytest.mark.anyio


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "id_rsa"
    path.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n" * 100)
    return path


def evil_disks(folder: Path, secret: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(exist_ok=True)
    made = {
        "backing": (folder / "evil.qcow2", "qcow2"),
        "missing-backing": (folder / "gone.qcow2", "qcow2"),
        "data-file": (folder / "datafile.qcow2", "qcow2"),
        "flat-vmdk": (folder / "flat.vmdk", "vmdk"),
        "chain": (folder / "chain.qcow2", "qcow2"),
    }
    qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(made["backing"][0]), "1M")
    gone = made["missing-backing"][0]
    qemu_img("create", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b", str(folder / "nope.raw"), str(gone), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={secret}", str(made["data-file"][0]), "1M")
    # A hand-written flat vmdk descriptor whose only extent is the host file.
    made["flat-vmdk"][0].write_text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
        f'RW 8 FLAT "{secret}" 0\n'
    )
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(made["backing"][0]), str(made["chain"][0]), "1M")
    return made


def legit_disks(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(exist_ok=True)
    made = {fmt: (folder / f"ok.{fmt}", fmt) for fmt in ("qcow2", "raw", "vmdk", "vpc")}
    for path, fmt in made.values():
        qemu_img("create", "-q", "-f", fmt, str(path), "1M")
    made["stream-vmdk"] = (folder / "stream.vmdk", "vmdk")
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", str(made["stream-vmdk"][0]), "1M")
    return made


async def test_every_shape_that_reads_other_files_is_refused(tmp_path: Path, secret: Path) -> None:
    for kind, (path, fmt) in evil_disks(tmp_path / "evil", secret).items():
        with pytest.raises(SourceError) as caught:
            await disks.check_self_contained(path, fmt)
        message = str(caught.value)
        assert "backing" in message and f"qemu-img convert -O {fmt} {path}" in message, kind
        assert "\n" not in message
    for kind, (path, fmt) in legit_disks(tmp_path / "ok").items():
        await disks.check_self_contained(path, fmt)  # no error: legitimate disks pass
        assert kind


def _ctx(tmp_path: Path, base: Path):
    config = Config({}, {"HOME": str(tmp_path), "AIB_HOME": str(tmp_path / "home"), "AIB_CACHE": str(tmp_path / "c")})
    options = BuildOptions(config=config, base_directory=base)
    return make_run_context(tmp_path, config=config, emit=EventRecorder(), options=options)


async def test_disk_image_source_with_a_backing_file_is_refused_even_with_its_checksum(
    tmp_path: Path, secret: Path
) -> None:
    evil, _ = evil_disks(tmp_path / "proj", secret)["backing"]
    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    spec = DiskImageSource.model_validate({"type": "DiskImage", "uri": "evil.qcow2", "sha256Checksum": digest})
    with pytest.raises(SourceError, match=r"backing file .*id_rsa"):
        await UrlDiskSource().resolve(spec, _ctx(tmp_path, tmp_path / "proj"))
    # The legitimate disk next to it still resolves.
    ok, _ = legit_disks(tmp_path / "proj")["qcow2"]
    spec = DiskImageSource.model_validate({"type": "DiskImage", "uri": ok.name, "format": "qcow2"})
    image = await UrlDiskSource().resolve(spec, _ctx(tmp_path, tmp_path / "proj"))
    assert image.path == ok and image.format == "qcow2"


def test_cli_build_from_an_evil_disk_fails_in_one_line(tmp_path: Path, secret: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AIB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.delenv("AIB_CONFIG", raising=False)
    evil_disks(tmp_path / "proj", secret)
    out = tmp_path / "out.qcow2"
    doc = {
        "source": {"type": "DiskImage", "uri": "evil.qcow2", "format": "qcow2"},
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": out.as_uri(), "format": "qcow2"}],
    }
    template = tmp_path / "proj" / "t.json"
    template.write_text(json.dumps(doc))
    code = main(["build", str(template), "--progress", "none"])
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert "backing file" in err and "qemu-img convert" in err and "Traceback" not in err
    assert "Building failed (resolving source DiskImage)" in err  # refused before a VM was started
