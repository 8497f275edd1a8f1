"""Azure VM sizes → (vCPUs, memory GiB), so ``vmProfile.vmSize`` shapes the local build VM.

The table holds common sizes as Azure documents them. An unknown ``Standard_<family><N>…`` size is read as N
vCPUs with 4 GiB each; anything else gets AIB's default size. The result is capped to the host (vCPUs to its
cores, memory to half its RAM) and the provider settings ``[qemu] cpus`` and ``memory_mib`` override both.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

DEFAULT_SIZE = "Standard_D1_v2"
"""AIB's default build VM size for Gen1 images."""
DEFAULT_SIZE_GEN2 = "Standard_D2ds_v4"
"""AIB's default build VM size for Gen2 images."""

SIZES: dict[str, tuple[int, float]] = {
    "standard_a1_v2": (1, 2),
    "standard_a2_v2": (2, 4),
    "standard_a4_v2": (4, 8),
    "standard_a8_v2": (8, 16),
    "standard_b1s": (1, 1),
    "standard_b1ms": (1, 2),
    "standard_b2s": (2, 4),
    "standard_b2ms": (2, 8),
    "standard_b4ms": (4, 16),
    "standard_b8ms": (8, 32),
    "standard_d1_v2": (1, 3.5),
    "standard_d2_v2": (2, 7),
    "standard_d3_v2": (4, 14),
    "standard_d4_v2": (8, 28),
    "standard_ds1_v2": (1, 3.5),
    "standard_ds2_v2": (2, 7),
    "standard_ds3_v2": (4, 14),
    "standard_ds4_v2": (8, 28),
    "standard_d2s_v3": (2, 8),
    "standard_d4s_v3": (4, 16),
    "standard_d8s_v3": (8, 32),
    "standard_d16s_v3": (16, 64),
    "standard_d2_v3": (2, 8),
    "standard_d4_v3": (4, 16),
    "standard_d8_v3": (8, 32),
    "standard_d2s_v4": (2, 8),
    "standard_d4s_v4": (4, 16),
    "standard_d2ds_v4": (2, 8),
    "standard_d4ds_v4": (4, 16),
    "standard_d2s_v5": (2, 8),
    "standard_d4s_v5": (4, 16),
    "standard_d8s_v5": (8, 32),
    "standard_d2ds_v5": (2, 8),
    "standard_d4ds_v5": (4, 16),
    "standard_d2as_v5": (2, 8),
    "standard_d4as_v5": (4, 16),
    "standard_e2s_v3": (2, 16),
    "standard_e4s_v3": (4, 32),
    "standard_e2s_v5": (2, 16),
    "standard_e4s_v5": (4, 32),
    "standard_f2s_v2": (2, 4),
    "standard_f4s_v2": (4, 8),
    "standard_f8s_v2": (8, 16),
}

_GENERIC = re.compile(r"^standard_[a-z]+?(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class VmShape:
    cpus: int
    memory_mib: int


def lookup(vm_size: str, *, generation: str = "V1") -> tuple[int, float]:
    """(vCPUs, GiB) for an Azure size name (case-insensitive); unknown names per the module's rules."""
    name = (vm_size or (DEFAULT_SIZE_GEN2 if generation == "V2" else DEFAULT_SIZE)).strip().lower()
    if name in SIZES:
        return SIZES[name]
    match = _GENERIC.match(name)
    if match and int(match.group(1)) > 0:
        cpus = int(match.group(1))
        return cpus, 4.0 * cpus
    return SIZES[DEFAULT_SIZE.lower()]


def host_memory_mib() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        return 4096


def shape(
    vm_size: str,
    *,
    generation: str = "V1",
    cpus: int | None = None,
    memory_mib: int | None = None,
    host_cpus: int | None = None,
    host_mib: int | None = None,
) -> VmShape:
    """The QEMU ``-smp``/``-m`` for a size, capped to the host; explicit ``cpus``/``memory_mib`` win."""
    want_cpus, gib = lookup(vm_size, generation=generation)
    host_cpus = host_cpus or os.cpu_count() or 1
    host_mib = host_mib or host_memory_mib()
    final_cpus = cpus if cpus else min(want_cpus, host_cpus)
    final_mib = memory_mib if memory_mib else min(int(gib * 1024), max(256, host_mib // 2))
    return VmShape(max(1, final_cpus), max(128, final_mib))
