"""The ``[qemu]`` provider settings (also ``AIB_QEMU_<KEY>`` environment variables)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aib_sdk.config import Config
from aib_sdk.errors import UsageError

PROVIDER = "qemu"


def _int(section: dict[str, Any], key: str) -> int | None:
    value = section.get(key)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"[qemu] {key} must be an integer, not {value!r}") from exc


def _float(section: dict[str, Any], key: str, default: float) -> float:
    value = section.get(key)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"[qemu] {key} must be a number of seconds, not {value!r}") from exc


@dataclass(frozen=True)
class QemuSettings:
    """Settings of the QEMU build host.

    - ``binary``: the emulator (default ``qemu-system-x86_64`` on PATH).
    - ``accel``: ``auto`` (probe), ``kvm`` or ``tcg``.
    - ``cpus``/``memory_mib``: override what ``vmSize`` maps to.
    - ``build_user``: the user the NoCloud seed creates (default ``packer``, as AIB's build VMs).
    - ``ssh_user``/``ssh_private_key``/``ssh_host_key``: access to ``static`` images (no seed read).
    - ``boot_timeout``/``shutdown_timeout``: seconds.
    - ``tcg_memory_cap_mib``: without KVM, memory above this (default 2048 MiB) only slows the boot, so
      ``vmSize`` memory is capped to it (``memory_mib`` still sets any size; 0 turns the cap off).
    """

    binary: str = "qemu-system-x86_64"
    accel: str = "auto"
    cpus: int | None = None
    memory_mib: int | None = None
    build_user: str = "packer"
    ssh_user: str | None = None
    ssh_private_key: Path | None = None
    ssh_host_key: str | None = None
    boot_timeout: float = 300.0
    shutdown_timeout: float = 120.0
    tcg_memory_cap_mib: int = 2048

    @classmethod
    def from_config(cls, config: Config) -> QemuSettings:
        s = config.section(PROVIDER)
        accel = str(s.get("accel", "auto")).lower()
        if accel not in ("auto", "kvm", "tcg"):
            raise UsageError(f"[qemu] accel must be auto, kvm or tcg, not {accel!r}")
        key = s.get("ssh_private_key")
        return cls(
            binary=str(s.get("binary") or "qemu-system-x86_64"),
            accel=accel,
            cpus=_int(s, "cpus"),
            memory_mib=_int(s, "memory_mib"),
            build_user=str(s.get("build_user") or "packer"),
            ssh_user=s.get("ssh_user") or None,
            ssh_private_key=Path(str(key)).expanduser() if key else None,
            ssh_host_key=s.get("ssh_host_key") or None,
            boot_timeout=_float(s, "boot_timeout", 300.0),
            shutdown_timeout=_float(s, "shutdown_timeout", 120.0),
            tcg_memory_cap_mib=2048 if _int(s, "tcg_memory_cap_mib") is None else int(s["tcg_memory_cap_mib"]),
        )
