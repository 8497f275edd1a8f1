"""One async wrapper over ``qemu-img`` shared by every provider (info, overlay, convert, resize, digests).

Conversions of an :class:`~aib_sdk.artifacts.Artifact` are cached per artifact and format, so three
distributors that want a VHD convert once (:func:`converted`).

API (implemented by the owner of this module; signatures are the contract):

- ``async def info(path: Path, fmt: str | None = None) -> DiskInfo``
- ``async def create_overlay(base: Path, base_format: str, overlay: Path, *, size: int | None = None) -> None``
- ``async def convert(src: Path, src_format: str, dst: Path, dst_format: str, *, compression: str | None = None,
  options: Sequence[str] = (), on_progress: ProgressHandler | None = None) -> None``
- ``async def resize(path: Path, fmt: str, size: int) -> None``
- ``async def converted(artifact: Artifact, target: OutputFormat, ctx: RunContext) -> Path`` where ``OutputFormat``
  is ``"qcow2" | "qcow2-zstd" | "raw" | "vhd" (fixed, 1 MiB aligned, Azure rules) | "vhd-dynamic" | "vmdk"``
- ``async def sha256_file(path: Path, on_progress: ProgressHandler | None = None) -> str``
"""
