"""One async wrapper over ``qemu-img`` shared by every provider (info, overlay, convert, resize, digests).

Conversions of an :class:`~aib_sdk.artifacts.Artifact` are cached per artifact and format, so three
distributors that want a VHD convert once (:func:`converted`).

API (signatures are the contract):

- ``async def info(path: Path, fmt: str | None = None) -> DiskInfo``
- ``async def check_self_contained(path: Path, fmt: str | None = None, *, what: str = "source disk") -> None``:
  refuses (``SourceError``, message says "backing" and how to flatten) a disk with a backing file, an external
  data file, or a flat/multi-extent vmdk; every source calls it on every disk that enters a build
- ``async def create_overlay(base: Path, base_format: str, overlay: Path, *, size: int | None = None) -> None``
- ``async def convert(src: Path, src_format: str, dst: Path, dst_format: str, *, compression: str | None = None,
  options: Sequence[str] = (), on_progress: ProgressHandler | None = None) -> None``
- ``async def resize(path: Path, fmt: str, size: int) -> None``
- ``async def converted(artifact: Artifact, target: OutputFormat, ctx: RunContext) -> Path`` where ``OutputFormat``
  is ``"qcow2" | "qcow2-zstd" | "qcow2-zlib" | "raw" | "vhd" (fixed, 1 MiB aligned, Azure rules) | "vhd-dynamic"
  | "vmdk"``
- ``async def sha256_file(path: Path, on_progress: ProgressHandler | None = None) -> str``
- ``async def cached_sha256(path: Path, cache_dir: Path, on_progress=None) -> str``: :func:`sha256_file`, recorded
  under ``<cache>/digests/`` with the file's device, inode, size, mtime and ctime; a file whose record still
  matches is not read again
- ``async def artifact_sha256(artifact: Artifact, path: Path, on_progress=None) -> str``: the digest of the artifact
  or one of its conversions, hashed once per run however many targets ask
- ``async def copy_sparse(src: Path, dst: Path, *, on_progress: ProgressHandler | None = None) -> None`` (copies
  only the data extents of ``src``: holes stay holes; fsyncs ``dst``)

Every failure of ``qemu-img`` raises :class:`~aib_sdk.errors.BuildError` carrying its stderr. ``qemu-img`` probes a
fixed VHD as ``raw``: pass ``fmt="vpc"`` to :func:`info` for VHD files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.from_thread
import anyio.to_thread

from aib_sdk.errors import BuildError, UsageError

if TYPE_CHECKING:
    from aib_sdk.artifacts import Artifact
    from aib_sdk.context import RunContext
    from aib_sdk.protocols import ProgressHandler

OutputFormat = Literal["qcow2", "qcow2-zstd", "qcow2-zlib", "raw", "vhd", "vhd-dynamic", "vmdk"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("qcow2", "qcow2-zstd", "qcow2-zlib", "raw", "vhd", "vhd-dynamic", "vmdk")

MIB = 1024 * 1024
VHD_FOOTER = 512
CHUNK = 4 * MIB

_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")

# target → (qemu-img output format, compression, extra -o options, file suffix)
_TARGETS: dict[str, tuple[str, str | None, tuple[str, ...], str]] = {
    "qcow2": ("qcow2", None, (), ".qcow2"),
    "qcow2-zstd": ("qcow2", "zstd", (), ".zstd.qcow2"),
    "qcow2-zlib": ("qcow2", "zlib", (), ".zlib.qcow2"),
    "raw": ("raw", None, (), ".raw"),
    "vhd": ("vpc", None, ("subformat=fixed", "force_size=on"), ".vhd"),
    "vhd-dynamic": ("vpc", None, ("subformat=dynamic", "force_size=on"), ".dynamic.vhd"),
    "vmdk": ("vmdk", None, (), ".vmdk"),
}


@dataclass(frozen=True)
class DiskInfo:
    """What ``qemu-img info`` says about one disk file."""

    format: str
    virtual_size: int
    actual_size: int
    backing_filename: str | None = None
    backing_format: str | None = None


def _qemu_img() -> str:
    exe = shutil.which("qemu-img")
    if exe is None:
        raise BuildError("qemu-img not found: install qemu-utils (Debian) or QEMU")
    return exe


def _fail(what: str, stderr: bytes) -> BuildError:
    text = stderr.decode("utf-8", "replace").strip()
    return BuildError(f"qemu-img {what} failed: {text or 'no error output'}")


async def _run(what: str, args: Sequence[str]) -> bytes:
    """Run ``qemu-img ARGS``; return its stdout or raise :class:`BuildError` with its stderr."""
    try:
        proc = await anyio.run_process([_qemu_img(), *args], check=False)
    except OSError as exc:
        raise BuildError(f"qemu-img {what} could not start: {exc}") from exc
    if proc.returncode != 0:
        raise _fail(what, proc.stderr)
    return proc.stdout


async def info(path: Path, fmt: str | None = None) -> DiskInfo:
    """Read a disk's format, virtual size, allocated size and backing file (``-U``: safe while a VM runs)."""
    args = ["info", "--output=json", "-U"]
    if fmt:
        args += ["-f", fmt]
    out = await _run("info", [*args, "--", str(path)])
    try:
        data: dict[str, Any] = json.loads(out)
        return DiskInfo(
            format=str(data["format"]),
            virtual_size=int(data["virtual-size"]),
            actual_size=int(data.get("actual-size", 0)),
            backing_filename=data.get("full-backing-filename") or data.get("backing-filename"),
            backing_format=data.get("backing-filename-format"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"qemu-img info gave unreadable output for {path}: {exc}") from exc


_SELF_CONTAINED_VMDK = frozenset({"monolithicSparse", "streamOptimized"})


def _containment_problem(top: dict[str, Any], path: Path) -> str | None:
    """Why the disk ``top`` (one ``qemu-img info`` JSON object) reads other files, or ``None``."""
    backing = top.get("full-backing-filename") or top.get("backing-filename")
    if backing:
        return f"it has a backing file {backing!r}"
    specific = top.get("format-specific") or {}
    data = specific.get("data") or {}
    if specific.get("type") == "qcow2" and data.get("data-file"):
        return f"it stores its data in an external data file {data['data-file']!r}"
    if specific.get("type") == "vmdk":
        create_type = str(data.get("create-type", ""))
        extents = data.get("extents") or []
        others = [str(e.get("filename")) for e in extents if Path(str(e.get("filename"))).name != path.name]
        if create_type not in _SELF_CONTAINED_VMDK or others or len(extents) > 1:
            where = f" {others[0]!r}" if others else ""
            return f"it is a {create_type or 'multi-extent'} vmdk whose data lives in other files{where}"
    return None


async def check_self_contained(path: Path, fmt: str | None = None, *, what: str = "source disk") -> None:
    """Refuse a disk that reads other files: a backing file (chain), an external data file, a flat or multi-extent
    vmdk. Such a header can name any host file (``~/.ssh/id_rsa``), which the build would flatten into the image,
    and a ``sha256Checksum`` covers only the header. Raises :class:`~aib_sdk.errors.SourceError`.
    """
    args = ["info", "--output=json", "-U"] + (["-f", fmt] if fmt else [])
    try:
        out = await _run("info", [*args, "--backing-chain", "--", str(path)])
    except BuildError:  # e.g. the backing file does not exist: the plain header still names it
        out = await _run("info", [*args, "--", str(path)])
    try:
        parsed = json.loads(out)
    except ValueError as exc:
        raise BuildError(f"qemu-img info gave unreadable output for {path}: {exc}") from exc
    chain: list[dict[str, Any]] = parsed if isinstance(parsed, list) else [parsed]
    problem = _containment_problem(chain[0], path) if chain else None
    if problem is None and len(chain) > 1:
        problem = f"it has a backing chain of {len(chain)} files"
    if problem is not None:
        from aib_sdk.errors import SourceError

        fmt_out = fmt if fmt in ("qcow2", "raw", "vmdk", "vpc") else "qcow2"
        raise SourceError(
            f"{what} {path} refused: {problem}; source disks must be self-contained (no backing file, external "
            f"data file or flat/multi-extent vmdk). Flatten it first if you trust what it points to: "
            f"qemu-img convert -O {fmt_out} {path} flat.{fmt_out}"
        )


async def create_overlay(base: Path, base_format: str, overlay: Path, *, size: int | None = None) -> None:
    """Create a qcow2 ``overlay`` backed by ``base`` (its absolute path is recorded); ``size`` may grow the disk."""
    args = ["create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(Path(base).absolute()), str(overlay)]
    if size is not None:
        args.append(str(size))
    await _run("create", args)


async def resize(path: Path, fmt: str, size: int) -> None:
    """Set the virtual size of ``path`` to ``size`` bytes (shrinking is allowed when asked for)."""
    await _run("resize", ["resize", "-q", "--shrink", "-f", fmt, str(path), str(size)])


async def convert(
    src: Path,
    src_format: str,
    dst: Path,
    dst_format: str,
    *,
    compression: str | None = None,
    options: Sequence[str] = (),
    on_progress: ProgressHandler | None = None,
) -> None:
    """Convert ``src`` into a new ``dst`` (sparse where the format allows).

    ``compression`` (``zstd``/``zlib``) writes a compressed qcow2; ``options`` are extra ``-o`` settings such as
    ``subformat=fixed``. Progress is read from ``qemu-img -p`` and reported in bytes of the virtual size. On
    cancellation the process is killed (``dst`` may then hold a partial file: the caller owns its removal).
    """
    if compression not in (None, "none", "zstd", "zlib"):
        raise UsageError(f"unknown compression {compression!r} (expected zstd or zlib)")
    compress = compression if compression not in (None, "none") else None
    if compress and dst_format != "qcow2":
        raise UsageError(f"compression applies to qcow2 only, not {dst_format}")
    total = (await info(src, src_format)).virtual_size if on_progress else None
    opts = list(options)
    args = ["convert", "-p", "-f", src_format, "-O", dst_format]
    if compress:
        args += ["-c", "-W", "-m", "4"]
        opts.append(f"compression_type={compress}")
    if opts:
        args += ["-o", ",".join(opts)]
    args += [str(src), str(dst)]
    try:
        proc = await anyio.open_process([_qemu_img(), *args])
    except OSError as exc:
        raise BuildError(f"qemu-img convert could not start: {exc}") from exc
    stderr = bytearray()
    async with proc:
        stdout, errs = proc.stdout, proc.stderr
        assert stdout is not None and errs is not None

        async def read_progress() -> None:
            tail = b""
            async for chunk in stdout:
                tail = (tail + chunk)[-256:]
                found = _PROGRESS.findall(tail)
                if found:
                    tail = tail[tail.rfind(b")") + 1 :]
                    if on_progress and total is not None:
                        on_progress(min(total, int(float(found[-1]) * total / 100)), total)

        async def read_errors() -> None:
            async for chunk in errs:
                stderr.extend(chunk[: max(0, 65536 - len(stderr))])

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_progress)
                tg.start_soon(read_errors)
                await proc.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            raise
    if proc.returncode != 0:
        raise _fail("convert", bytes(stderr))
    if on_progress and total is not None:
        on_progress(total, total)


async def sha256_file(path: Path, on_progress: ProgressHandler | None = None) -> str:
    """The hex sha256 of a file, hashed chunk by chunk in worker threads (cancellable between chunks)."""
    digest = hashlib.sha256()
    total = (await anyio.Path(path).stat()).st_size
    done = 0
    raw = await anyio.to_thread.run_sync(open, path, "rb")
    try:

        def step() -> int:
            data = raw.read(CHUNK)
            digest.update(data)
            return len(data)

        while n := await anyio.to_thread.run_sync(step):
            done += n
            if on_progress:
                on_progress(done, total)
    finally:
        raw.close()
    if on_progress and done == 0:
        on_progress(0, total)
    return digest.hexdigest()


def _stat_key(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {
        "path": str(path.resolve()),
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def _record_file(cache_dir: Path, path: Path) -> Path:
    return cache_dir / "digests" / hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]


def _recorded_digest(cache_dir: Path, path: Path) -> tuple[str | None, dict[str, Any]]:
    key = _stat_key(path)
    try:
        record = json.loads(_record_file(cache_dir, path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, key
    digest = record.get("sha256") if isinstance(record, dict) and record.get("stat") == key else None
    return (digest if isinstance(digest, str) and len(digest) == 64 else None), key


def _record_digest(cache_dir: Path, path: Path, key: dict[str, Any], digest: str) -> None:
    if _stat_key(path) != key:
        return  # the file changed while it was read: record nothing
    file = _record_file(cache_dir, path)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps({"stat": key, "sha256": digest}), encoding="utf-8")
        tmp.replace(file)
    except OSError:
        pass  # a cache: a read-only cache directory costs a re-hash next time, nothing else


async def cached_sha256(path: Path, cache_dir: Path, on_progress: ProgressHandler | None = None) -> str:
    """:func:`sha256_file`, read once per file version: the digest is recorded with the file's device, inode, size,
    mtime and ctime under ``<cache_dir>/digests/``, and a file whose record still matches is not read again
    (as ``git`` trusts its index). Any change to the file (a write touches mtime and ctime) means a re-hash."""
    digest, key = await anyio.to_thread.run_sync(_recorded_digest, cache_dir, path)
    if digest is not None:
        if on_progress:
            on_progress(key["size"], key["size"])
        return digest
    digest = await sha256_file(path, on_progress)
    await anyio.to_thread.run_sync(_record_digest, cache_dir, path, key, digest)
    return digest


def _copy_range(fin: int, fout: int, start: int, end: int, report: Callable[[int], None]) -> None:
    pos = start
    fast = True
    while pos < end:
        count = min(CHUNK * 4, end - pos)
        if fast:
            try:
                n = os.copy_file_range(fin, fout, count, pos, pos)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                fast = False
                continue
        else:
            data = os.pread(fin, count, pos)
            n = os.pwrite(fout, data, pos) if data else 0
        if n <= 0:
            raise OSError(f"short copy at offset {pos}")
        pos += n
        report(pos)


def _copy_extents(src: Path, dst: Path, report: Callable[[int, int], None]) -> None:
    """Copy the data extents of ``src`` to ``dst`` and fsync it (runs in a worker thread)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fin.fileno(), offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole remains
                    break
                raise
            end = os.lseek(fin.fileno(), start, os.SEEK_HOLE)
            _copy_range(fin.fileno(), fout.fileno(), start, end, lambda pos: report(pos, size))
            offset = end
        fout.truncate(size)
        os.fsync(fout.fileno())
    report(size, size)


async def copy_sparse(src: Path, dst: Path, *, on_progress: ProgressHandler | None = None) -> None:
    """Copy ``src`` to ``dst`` keeping holes as holes, then fsync ``dst``; progress is the offset reached.

    The copy runs in a worker thread that stops at its next chunk when the calling task is cancelled.
    """

    def report(done: int, total: int) -> None:
        anyio.from_thread.check_cancelled()
        if on_progress:
            anyio.from_thread.run_sync(on_progress, done, total)

    try:
        await anyio.to_thread.run_sync(_copy_extents, src, dst, report)
    except OSError as exc:
        raise BuildError(f"cannot copy {src} to {dst}: {exc}") from exc


# Cached conversions ------------------------------------------------------------------------------------------

_LOCKS: dict[int, dict[str, anyio.Lock]] = {}


def _lock_for(artifact: Artifact, key: str) -> anyio.Lock:
    ident = id(artifact)
    if ident not in _LOCKS:
        _LOCKS[ident] = {}
        weakref.finalize(artifact, _LOCKS.pop, ident, None)
    return _LOCKS[ident].setdefault(key, anyio.Lock())


def round_up_mib(size: int) -> int:
    """``size`` rounded up to a whole MiB (Azure requires VHD sizes aligned to 1 MiB)."""
    return -(-size // MIB) * MIB


async def _remove(path: Path) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.Path(path).unlink(missing_ok=True)


async def artifact_sha256(artifact: Artifact, path: Path, on_progress: ProgressHandler | None = None) -> str:
    """sha256 of ``path`` (the artifact or one of its conversions), computed once and cached on the artifact."""
    if path == artifact.path and artifact.sha256:
        return artifact.sha256.lower()
    async with _lock_for(artifact, f"sha256:{path}"):
        cached = artifact.digests.get(path)
        if cached is None:
            cached = artifact.digests[path] = await sha256_file(path, on_progress)
        return cached


async def converted(
    artifact: Artifact, target: OutputFormat, ctx: RunContext, *, target_name: str | None = None
) -> Path:
    """``artifact`` as a file in format ``target``, converted once per artifact and target, then cached.

    Concurrent callers for the same target wait for the first one's conversion. Outputs live in
    ``ctx.staging.work``; the artifact itself is returned when it already has the wanted format. ``vhd`` is a
    fixed VHD whose virtual size is rounded up to a whole MiB (the file is that size plus a 512-byte footer).
    ``target_name`` tags the progress events with the run output that asked.
    """
    if target not in _TARGETS:
        raise UsageError(f"unknown output format {target!r} (expected one of {', '.join(OUTPUT_FORMATS)})")
    if target in ("qcow2", "raw") and artifact.format == target:
        return artifact.path
    async with _lock_for(artifact, target):
        cached = artifact.conversions.get(target)
        if cached is not None and await anyio.Path(cached).exists():
            return cached
        dst_format, compression, options, suffix = _TARGETS[target]
        await anyio.Path(ctx.staging.work).mkdir(parents=True, exist_ok=True)
        out = ctx.staging.work / f"{artifact.path.stem}{suffix}"
        if await anyio.Path(out).exists():  # another artifact of this run converted a same-named disk
            out = out.with_name(f"{artifact.path.stem}-{secrets.token_hex(3)}{suffix}")
        tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
        src, src_format = artifact.path, str(artifact.format)
        overlay: Path | None = None
        label = f"{artifact.path.name} → {target}"

        def progress(done: int, total: int | None) -> None:
            ctx.progress("convert", label, done, total, target=target_name)

        try:
            if dst_format == "vpc":
                size = (await info(src, src_format)).virtual_size
                if size % MIB:
                    # Grow through a throwaway overlay: reads past the base's end are zeros, nothing is copied.
                    overlay = out.with_name(f".{out.name}.{secrets.token_hex(4)}.grow.qcow2")
                    await create_overlay(src, src_format, overlay, size=round_up_mib(size))
                    src, src_format = overlay, "qcow2"
            await convert(
                src, src_format, tmp, dst_format, compression=compression, options=options, on_progress=progress
            )
            await anyio.Path(tmp).rename(out)
        except BaseException:
            await _remove(tmp)
            raise
        finally:
            if overlay is not None:
                await _remove(overlay)
        artifact.conversions[target] = out
        return out
