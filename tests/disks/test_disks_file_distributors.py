"""The core's file distributors (DiskFile, VHD to file://) with the real qemu-img and the real filesystem."""

from __future__ import annotations

import struct
from pathlib import Path

import anyio
import pytest

from aib_sdk import disks
from aib_sdk.artifacts import Artifact
from aib_sdk.config import Config
from aib_sdk.distributors.files import DiskFileDistributor, LocalVhdDistributor
from aib_sdk.errors import DistributeError, UsageError
from aib_sdk.events import Progress
from aib_sdk.models import specs
from aib_sdk.plugins.manager import PluginManager

MIB = 1024 * 1024
pytestmark = pytest.mark.anyio


def vhd_spec(uri: str | None, name: str = "vhdOut") -> specs.VhdDistributor:
    data: dict[str, object] = {"type": "VHD", "runOutputName": name}
    if uri is not None:
        data["uri"] = uri
    return specs.VhdDistributor.model_validate(data)


def diskfile_spec(
    uri: str, fmt: str = "qcow2", compression: str = "none", name: str = "file"
) -> specs.DiskFileDistributor:
    return specs.DiskFileDistributor.model_validate(
        {"type": "DiskFile", "runOutputName": name, "uri": uri, "format": fmt, "compression": compression}
    )


@pytest.fixture
def artifact(sample_raw) -> Artifact:
    path, _ = sample_raw
    return Artifact(path=path, format="raw", virtual_size=16 * MIB + 4096)


def test_routing_by_uri() -> None:
    pm = PluginManager(entry_points=False)
    config = Config({}, {})
    assert pm.distributor_for(vhd_spec("file:///srv/out/a.vhd"), config) is LocalVhdDistributor
    assert pm.distributor_for(vhd_spec(None), config) is LocalVhdDistributor
    assert pm.distributor_for(diskfile_spec("file:///srv/a.qcow2"), config) is DiskFileDistributor
    assert not LocalVhdDistributor.claims(vhd_spec("s3://bucket/a.vhd"), config)
    assert not LocalVhdDistributor.claims(vhd_spec("https://acct.blob.core.windows.net/c/a.vhd"), config)
    assert not DiskFileDistributor.claims(diskfile_spec("s3://bucket/a.qcow2"), config)
    assert not DiskFileDistributor.claims(vhd_spec(None), config)


@pytest.mark.parametrize("uri", ["file:///srv/../etc/a.vhd", "file://relative/a.vhd", "file:///srv/out/"])
def test_unsafe_file_uris_are_refused(uri: str) -> None:
    with pytest.raises(UsageError):
        LocalVhdDistributor.claims(vhd_spec(uri), Config({}, {}))
    with pytest.raises(UsageError):
        DiskFileDistributor.claims(diskfile_spec(uri), Config({}, {}))


async def test_vhd_without_uri_goes_to_run_directory(run_ctx, artifact, events) -> None:
    out = await LocalVhdDistributor().publish(artifact, vhd_spec(None), run_ctx)
    dest = run_ctx.staging.run_directory / "vhdOut.vhd"
    assert out.run_output_name == "vhdOut"
    assert out.artifact_uri == dest.as_uri() and out.artifact_id is None
    assert dest.stat().st_size == 17 * MIB + 512
    footer = dest.read_bytes()[-512:]
    assert footer[:8] == b"conectix" and struct.unpack(">I", footer[60:64])[0] == 2
    copies = [e for e in events if isinstance(e, Progress) and e.task == "copy"]
    assert copies and copies[-1].target == "vhdOut" and copies[-1].done == copies[-1].total


async def test_vhd_to_file_uri_replaces_existing_file_atomically(run_ctx, artifact, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "nested" / "image.vhd"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"old content")
    with pytest.raises(UsageError, match="not an earlier output of this target"):  # someone else's file
        await LocalVhdDistributor().publish(artifact, vhd_spec(dest.as_uri()), run_ctx)
    assert dest.read_bytes() == b"old content"
    dest.unlink()
    await LocalVhdDistributor().publish(artifact, vhd_spec(dest.as_uri()), run_ctx)
    out = await LocalVhdDistributor().publish(artifact, vhd_spec(dest.as_uri()), run_ctx)  # replaces its own
    assert out.artifact_uri == dest.as_uri()
    assert dest.stat().st_size == 17 * MIB + 512
    assert (await disks.info(dest, "vpc")).virtual_size == 17 * MIB
    assert [p.name for p in dest.parent.iterdir()] == ["image.vhd"]


async def test_diskfile_formats(run_ctx, artifact, tmp_path: Path) -> None:
    cases = [("qcow2", "zstd", "qcow2"), ("raw", "none", "raw"), ("vpc", "none", "vpc"), ("vmdk", "none", "vmdk")]
    for fmt, compression, qemu_format in cases:
        dest = tmp_path / "outputs" / f"disk.{fmt}"
        out = await DiskFileDistributor().publish(
            artifact, diskfile_spec(dest.as_uri(), fmt, compression, name=f"out-{fmt}"), run_ctx
        )
        assert out.artifact_uri == dest.as_uri()
        assert (await disks.info(dest, qemu_format)).format == qemu_format
        proc = await anyio.run_process(
            ["qemu-img", "compare", "-f", "raw", "-F", qemu_format, str(artifact.path), str(dest)], check=False
        )
        assert proc.returncode == 0, proc.stdout
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == [
        "disk.qcow2",
        "disk.raw",
        "disk.vmdk",
        "disk.vpc",
    ]
    # The raw output is a copy, not the artifact itself, and it stays sparse.
    raw = tmp_path / "outputs" / "disk.raw"
    assert raw.stat().st_blocks * 512 < 4 * MIB


async def test_diskfile_compression_needs_qcow2(run_ctx, artifact, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="qcow2 only"):
        await DiskFileDistributor().publish(
            artifact, diskfile_spec((tmp_path / "a.raw").as_uri(), "raw", "zstd"), run_ctx
        )


async def test_failure_leaves_no_temp_file(run_ctx, artifact, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(DistributeError, match="cannot create folder"):
        await LocalVhdDistributor().publish(artifact, vhd_spec((blocker / "a.vhd").as_uri()), run_ctx)
    folder = tmp_path / "dest"
    (folder / "a.vhd").mkdir(parents=True)
    with pytest.raises(DistributeError, match="is a folder"):
        await LocalVhdDistributor().publish(artifact, vhd_spec((folder / "a.vhd").as_uri()), run_ctx)
    assert [p.name for p in folder.iterdir()] == ["a.vhd"]


async def test_cancelled_publish_removes_temp_file(run_ctx, tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src.raw"
    src.write_bytes(b"x" * MIB)
    artifact = Artifact(path=src, format="raw", virtual_size=MIB)
    started = anyio.Event()

    async def slow_copy(source: Path, dst: Path, *, on_progress=None) -> None:
        dst.write_bytes(b"partial")
        started.set()
        await anyio.sleep(30)

    monkeypatch.setattr(disks, "copy_sparse", slow_copy)
    dest = tmp_path / "out" / "a.qcow2"
    async with anyio.create_task_group() as tg:
        tg.start_soon(DiskFileDistributor().publish, artifact, diskfile_spec(dest.as_uri(), "raw"), run_ctx)
        await started.wait()
        assert [p.name.endswith(".part") for p in dest.parent.iterdir()] == [True]
        tg.cancel_scope.cancel()
    assert list(dest.parent.iterdir()) == []


async def test_concurrent_targets_convert_once(run_ctx, artifact, tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []
    real_convert = disks.convert

    async def counting_convert(*args, **kwargs) -> None:
        calls.append(args[3])
        await real_convert(*args, **kwargs)

    monkeypatch.setattr(disks, "convert", counting_convert)
    outputs = []

    async def publish(name: str) -> None:
        outputs.append(
            await LocalVhdDistributor().publish(artifact, vhd_spec((tmp_path / f"{name}.vhd").as_uri(), name), run_ctx)
        )

    async with anyio.create_task_group() as tg:
        for name in ("a", "b", "c"):
            tg.start_soon(publish, name)
    assert calls == ["vpc"]
    assert sorted(o.run_output_name for o in outputs) == ["a", "b", "c"]
    sizes = {(tmp_path / f"{n}.vhd").stat().st_size for n in "abc"}
    assert sizes == {17 * MIB + 512}


async def test_artifact_tags_go_to_a_sidecar_manifest(run_ctx, artifact, tmp_path: Path) -> None:
    """VHD and DiskFile carry ``artifactTags`` in ``<file>.json`` next to the disk: the tags, the file's own digest
    and size, and the build's facts. Without tags no sidecar is written."""
    import hashlib
    import json

    artifact.source_version = "2026.12.01"
    dest = tmp_path / "tagged" / "image.vhd"
    spec = specs.VhdDistributor.model_validate(
        {"type": "VHD", "runOutputName": "vhdOut", "uri": dest.as_uri(), "artifactTags": {"team": "infra", "x": "1"}}
    )
    await LocalVhdDistributor().publish(artifact, spec, run_ctx)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["image.vhd", "image.vhd.json"]
    sidecar = json.loads((dest.parent / "image.vhd.json").read_text())
    assert sidecar["artifactTags"] == {"team": "infra", "x": "1"}
    assert sidecar["sha256"] == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert sidecar["size"] == dest.stat().st_size and sidecar["format"] == "vpc" and sidecar["file"] == "image.vhd"
    assert sidecar["source"]["exactVersion"] == "2026.12.01" and sidecar["source"]["runId"] == run_ctx.run_id
    assert sidecar["source"]["capturedSha256"] == hashlib.sha256(artifact.path.read_bytes()).hexdigest()
    assert sidecar["source"]["virtualSize"] == artifact.virtual_size

    qcow2 = tmp_path / "tagged" / "disk.qcow2"
    tagged = diskfile_spec(qcow2.as_uri()).model_copy(update={"artifact_tags": {"role": "web"}})
    await DiskFileDistributor().publish(artifact, tagged, run_ctx)
    side = json.loads((tmp_path / "tagged" / "disk.qcow2.json").read_text())
    assert side["artifactTags"] == {"role": "web"} and side["format"] == "qcow2"
    assert side["sha256"] == hashlib.sha256(qcow2.read_bytes()).hexdigest()
    plain = tmp_path / "plain" / "disk.raw"
    await DiskFileDistributor().publish(artifact, diskfile_spec(plain.as_uri(), "raw"), run_ctx)
    assert [p.name for p in plain.parent.iterdir()] == ["disk.raw"]
