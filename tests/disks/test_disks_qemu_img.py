"""The qemu-img wrapper against the real qemu-img: info, overlays, resize, every output format, caching, progress."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import anyio
import pytest

from aib_sdk import disks
from aib_sdk.artifacts import Artifact
from aib_sdk.errors import BuildError, UsageError
from aib_sdk.events import Progress

MIB = 1024 * 1024
pytestmark = pytest.mark.anyio


async def same_content(a: Path, fa: str, b: Path, fb: str) -> bool:
    """``qemu-img compare`` (a real, independent check of guest-visible content)."""
    proc = await anyio.run_process(["qemu-img", "compare", "-f", fa, "-F", fb, str(a), str(b)], check=False)
    return proc.returncode == 0


async def test_info_reads_format_and_sizes(sample_raw: tuple[Path, bytes]) -> None:
    path, _ = sample_raw
    got = await disks.info(path)
    assert got.format == "raw"
    assert got.virtual_size == 16 * MIB + 4096
    assert 0 < got.actual_size < 4 * MIB  # sparse: only the written data is allocated
    assert got.backing_filename is None


async def test_info_failure_is_build_error_with_stderr(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"qemu-img info failed: .*(No such file|Could not open)"):
        await disks.info(tmp_path / "missing.qcow2")
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"QFI\xfb" + b"\0" * 60)
    with pytest.raises(BuildError, match="qemu-img info failed"):
        await disks.info(bad, "qcow2")


async def test_create_blank_disk(tmp_path: Path) -> None:
    blank = tmp_path / "data-0.qcow2"
    await disks.create(blank, "qcow2", 64 * MIB)
    got = await disks.info(blank)
    assert (got.format, got.virtual_size, got.backing_filename) == ("qcow2", 64 * MIB, None)
    with pytest.raises(BuildError, match="qemu-img create failed"):
        await disks.create(tmp_path / "no" / "such" / "dir.qcow2", "qcow2", MIB)


async def test_overlay_and_resize(tmp_path: Path, sample_raw: tuple[Path, bytes]) -> None:
    path, _ = sample_raw
    overlay = tmp_path / "overlay.qcow2"
    await disks.create_overlay(path, "raw", overlay, size=32 * MIB)
    got = await disks.info(overlay)
    assert (got.format, got.virtual_size) == ("qcow2", 32 * MIB)
    assert got.backing_filename == str(path)
    assert got.backing_format == "raw"
    assert await same_content(path, "raw", overlay, "qcow2")  # the grown tail reads as zeros
    await disks.resize(overlay, "qcow2", 48 * MIB)
    assert (await disks.info(overlay)).virtual_size == 48 * MIB
    with pytest.raises(BuildError, match="qemu-img resize failed"):
        await disks.resize(tmp_path / "nope.qcow2", "qcow2", MIB)


async def test_convert_reports_progress_and_keeps_content(tmp_path: Path, sample_raw: tuple[Path, bytes]) -> None:
    path, _ = sample_raw
    seen: list[tuple[int, int | None]] = []
    out = tmp_path / "out.qcow2"
    await disks.convert(path, "raw", out, "qcow2", on_progress=lambda d, t: seen.append((d, t)))
    assert await same_content(path, "raw", out, "qcow2")
    assert seen[-1] == (16 * MIB + 4096, 16 * MIB + 4096)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(seen) >= 2


async def test_convert_failure_and_bad_arguments(tmp_path: Path, sample_raw: tuple[Path, bytes]) -> None:
    path, _ = sample_raw
    with pytest.raises(BuildError, match=r"qemu-img convert failed: .*no_such_option"):
        await disks.convert(path, "raw", tmp_path / "x.img", "qcow2", options=["no_such_option=1"])
    with pytest.raises(UsageError, match="qcow2 only"):
        await disks.convert(path, "raw", tmp_path / "x.img", "raw", compression="zstd")


@pytest.mark.parametrize(
    ("target", "qemu_format"),
    [
        ("qcow2", "qcow2"),
        ("qcow2-zstd", "qcow2"),
        ("qcow2-zlib", "qcow2"),
        ("vhd-dynamic", "vpc"),
        ("vmdk", "vmdk"),
    ],
)
async def test_converted_formats(run_ctx, events, sample_raw, target: str, qemu_format: str) -> None:
    path, _ = sample_raw
    artifact = Artifact(path=path, format="raw", virtual_size=16 * MIB + 4096)
    out = await disks.converted(artifact, target, run_ctx)  # type: ignore[arg-type]
    assert out.parent == run_ctx.staging.work
    got = await disks.info(out, qemu_format)
    assert got.format == qemu_format
    assert await same_content(path, "raw", out, qemu_format)
    if target.startswith("qcow2-"):
        proc = await anyio.run_process(["qemu-img", "info", "--output=json", str(out)])
        assert f'"compression-type": "{target.split("-")[1]}"' in proc.stdout.decode()
    assert artifact.conversions[target] == out
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and progress[-1].task == "convert" and progress[-1].done == progress[-1].total
    assert not [p for p in run_ctx.staging.work.iterdir() if p.name.startswith(".")]  # no temp files left


async def test_converted_fixed_vhd_is_whole_mib_plus_footer(run_ctx, sample_raw) -> None:
    path, _ = sample_raw
    artifact = Artifact(path=path, format="raw", virtual_size=16 * MIB + 4096)
    out = await disks.converted(artifact, "vhd", run_ctx)
    size = out.stat().st_size
    assert size == 17 * MIB + 512  # rounded up to a whole MiB, plus the 512-byte footer
    footer = out.read_bytes()[-512:]
    assert footer[:8] == b"conectix"
    current_size = struct.unpack(">Q", footer[48:56])[0]
    disk_type = struct.unpack(">I", footer[60:64])[0]
    assert current_size == 17 * MIB
    assert disk_type == 2  # fixed
    assert (await disks.info(out, "vpc")).virtual_size == 17 * MIB
    assert await same_content(path, "raw", out, "vpc")
    assert os.stat(out).st_blocks * 512 < 8 * MIB  # still sparse
    assert not list(run_ctx.staging.work.glob(".*"))  # the grow overlay is gone


async def test_converted_same_format_is_the_artifact(run_ctx, sample_raw) -> None:
    path, _ = sample_raw
    artifact = Artifact(path=path, format="raw", virtual_size=16 * MIB + 4096)
    assert await disks.converted(artifact, "raw", run_ctx) == path
    assert list(run_ctx.staging.work.iterdir()) == []


async def test_converted_once_for_concurrent_callers(run_ctx, sample_raw, monkeypatch) -> None:
    path, _ = sample_raw
    artifact = Artifact(path=path, format="raw", virtual_size=16 * MIB + 4096)
    calls: list[str] = []
    real_convert = disks.convert

    async def counting_convert(*args, **kwargs) -> None:
        calls.append(args[3])
        await real_convert(*args, **kwargs)

    monkeypatch.setattr(disks, "convert", counting_convert)
    results: list[Path] = []

    async def want(target: str) -> None:
        results.append(await disks.converted(artifact, target, run_ctx))  # type: ignore[arg-type]

    async with anyio.create_task_group() as tg:
        for target in ("vhd", "vhd", "vhd", "qcow2", "qcow2"):
            tg.start_soon(want, target)
    assert sorted(calls) == ["qcow2", "vpc"]
    assert len(set(results)) == 2
    # A later caller gets the cached file without converting again.
    assert await disks.converted(artifact, "vhd", run_ctx) == artifact.conversions["vhd"]
    assert len(calls) == 2


async def test_converted_cancelled_leaves_nothing(run_ctx, tmp_path: Path) -> None:
    """Cancelled once qemu-img reports its first progress: the process is killed and its partial file removed."""
    big = tmp_path / "big.raw"
    with open(big, "wb") as f:
        f.write(os.urandom(32 * MIB))
    artifact = Artifact(path=big, format="raw", virtual_size=32 * MIB)
    seen: list[Progress] = []
    with anyio.CancelScope() as scope:

        def emit(event) -> None:
            if isinstance(event, Progress):
                seen.append(event)
                scope.cancel()

        run_ctx.emit = emit
        await disks.converted(artifact, "qcow2-zlib", run_ctx)
    assert scope.cancelled_caught and seen
    assert "qcow2-zlib" not in artifact.conversions
    assert list(run_ctx.staging.work.iterdir()) == []
    proc = await anyio.run_process(["pgrep", "-f", str(big)], check=False)
    assert proc.stdout == b""  # no qemu-img left running


async def test_converted_rejects_unknown_target(run_ctx, sample_raw) -> None:
    path, _ = sample_raw
    artifact = Artifact(path=path, format="raw", virtual_size=16 * MIB + 4096)
    with pytest.raises(UsageError, match="unknown output format"):
        await disks.converted(artifact, "iso", run_ctx)  # type: ignore[arg-type]


async def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(9 * MIB + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    seen: list[tuple[int, int | None]] = []
    digest = await disks.sha256_file(path, on_progress=lambda d, t: seen.append((d, t)))
    assert digest == hashlib.sha256(data).hexdigest()
    assert seen[-1] == (len(data), len(data))
    assert len(seen) == 3  # 4 MiB chunks


async def test_copy_sparse_keeps_holes(tmp_path: Path, sample_raw) -> None:
    path, payload = sample_raw
    dst = tmp_path / "copy.raw"
    seen: list[tuple[int, int | None]] = []
    await disks.copy_sparse(path, dst, on_progress=lambda d, t: seen.append((d, t)))
    assert dst.read_bytes() == path.read_bytes()
    assert os.stat(dst).st_blocks * 512 <= 2 * MIB + 64 * 1024
    assert seen[-1] == (16 * MIB + 4096, 16 * MIB + 4096)
    assert payload in dst.read_bytes()


async def test_copy_sparse_falls_back_across_filesystems(tmp_path: Path, sample_raw, monkeypatch) -> None:
    """Where copy_file_range refuses (EXDEV between filesystems), the copy still keeps holes."""
    import errno

    def refuse(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    path, _ = sample_raw
    dst = tmp_path / "copy.raw"
    await disks.copy_sparse(path, dst)
    assert dst.read_bytes() == path.read_bytes()
    assert os.stat(dst).st_blocks * 512 <= 2 * MIB + 64 * 1024


async def test_copy_sparse_errors_are_build_errors(tmp_path: Path, sample_raw) -> None:
    path, _ = sample_raw
    with pytest.raises(BuildError, match="cannot copy"):
        await disks.copy_sparse(path, tmp_path / "no-such-dir" / "x.raw")


async def test_two_artifacts_with_one_name_do_not_collide(run_ctx, sample_raw) -> None:
    path, _ = sample_raw
    first = Artifact(path=path, format="raw", virtual_size=16 * MIB + 4096)
    second = Artifact(path=path, format="raw", virtual_size=16 * MIB + 4096)
    a = await disks.converted(first, "qcow2", run_ctx)
    b = await disks.converted(second, "qcow2", run_ctx)
    assert a != b and a.exists() and b.exists()


@pytest.mark.anyio
async def test_artifact_sha256_hashes_each_file_once(tmp_path: Path) -> None:
    import hashlib

    from aib_sdk import disks
    from aib_sdk.artifacts import Artifact

    path = tmp_path / "disk.raw"
    path.write_bytes(b"abc" * 1000)
    artifact = Artifact(path=path, format="raw", virtual_size=3000)
    calls: list[int] = []
    digests = [await disks.artifact_sha256(artifact, path, lambda done, total: calls.append(done)) for _ in range(3)]
    assert digests == [hashlib.sha256(b"abc" * 1000).hexdigest()] * 3
    assert calls and calls[-1] == 3000 and calls.count(3000) == 1  # hashed on the first call only
    known = Artifact(path=path, format="raw", virtual_size=3000, sha256="AB" * 32)
    assert await disks.artifact_sha256(known, path) == "ab" * 32
