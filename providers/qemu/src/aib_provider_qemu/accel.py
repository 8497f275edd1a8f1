"""Choosing QEMU's accelerator: KVM only when it demonstrably works, else TCG.

``/dev/kvm`` alone proves nothing (a paravirtual ``kvm_pvm`` inside a Firecracker guest exposes the device but
aborts or hangs real guests), so ``auto`` asks for both a hardware KVM module (``kvm_intel`` or ``kvm_amd`` under
``/sys/module``) and a short test boot that reaches the guest kernel within a deadline.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import anyio

from aib_sdk.runtime import cleanup_scope

Accel = Literal["kvm", "tcg"]
TestBoot = Callable[[], Awaitable[bool]]

KVM_MODULES = ("kvm_intel", "kvm_amd")


def accel_args(accel: Accel) -> list[str]:
    """QEMU arguments for an accelerator."""
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def kvm_module_loaded(sys_root: Path = Path("/sys")) -> bool:
    """Whether a hardware KVM module is loaded (a paravirtual one does not count)."""
    return any((sys_root / "module" / name).is_dir() for name in KVM_MODULES)


async def probe(
    *, sys_root: Path = Path("/sys"), dev_kvm: Path = Path("/dev/kvm"), test_boot: TestBoot | None = None
) -> Accel:
    """``kvm`` if a KVM module is loaded, ``dev_kvm`` is usable and ``test_boot`` succeeds; otherwise ``tcg``."""
    if not kvm_module_loaded(sys_root):
        return "tcg"
    if not os.access(dev_kvm, os.R_OK | os.W_OK):
        return "tcg"
    if test_boot is None:
        return "tcg"
    try:
        return "kvm" if await test_boot() else "tcg"
    except OSError:
        return "tcg"


async def kvm_test_boot(qemu: str, kernel: Path | None, *, deadline: float = 15.0) -> bool:
    """Boot under KVM with no disk: success once ``kernel`` prints its banner on the serial port.

    Without a kernel, success means QEMU is still running after a few seconds with ``-cpu host`` (this catches
    KVMs that abort at vCPU setup, not ones that hang later).
    """
    args = [
        qemu,
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
    ]
    if kernel is not None:
        args += ["-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]
    process = await anyio.open_process(args)
    seen = b""
    try:
        if kernel is None:
            await anyio.sleep(3)
            return process.returncode is None
        with anyio.move_on_after(deadline):
            assert process.stdout is not None
            async for chunk in process.stdout:
                seen = (seen + chunk)[-4096:]
                if b"Linux version" in seen:
                    return True
        return False
    finally:
        with cleanup_scope(10):
            if process.returncode is None:
                process.kill()
            await process.aclose()
