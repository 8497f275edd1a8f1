"""Choosing QEMU's accelerator: KVM only when it demonstrably works, else TCG.

``/dev/kvm`` alone proves nothing (a paravirtual ``kvm_pvm`` inside a Firecracker guest exposes the device but
aborts or hangs real guests), so ``auto`` asks for both a hardware KVM module (``kvm_intel`` or ``kvm_amd`` under
``/sys/module``) and a short test boot that reaches the guest kernel within a deadline. The test boot's verdict is
remembered on disk (:func:`remembered`) until the host reboots or the emulator, the kernel or ``/dev/kvm`` change,
so a build does not test-boot before every start of its VM.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread

from aib_sdk.runtime import cleanup_scope

Accel = Literal["kvm", "tcg"]
TestBoot = Callable[[], Awaitable[bool]]

KVM_MODULES = ("kvm_intel", "kvm_amd")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


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


def _identity(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_rdev]


def test_boot_facts(
    qemu: str, kernel: Path | None, *, dev_kvm: Path = Path("/dev/kvm"), boot_id: Path = BOOT_ID
) -> dict[str, Any] | None:
    """What a KVM test boot's verdict depends on: this boot of the host, the emulator binary, the test kernel and
    ``/dev/kvm`` (each file by device, inode, size and mtime); ``None`` when one cannot be read (nothing is
    remembered then). Blocking (a few ``stat`` calls)."""
    binary = shutil.which(qemu)
    try:
        return {
            "bootId": boot_id.read_text().strip(),
            "qemu": _identity(Path(binary)) if binary else qemu,
            "kernel": _identity(kernel) if kernel is not None else None,
            "devKvm": _identity(dev_kvm),
        }
    except OSError:
        return None


def remembered(test_boot: TestBoot, record_dir: Path, facts: Callable[[], dict[str, Any] | None]) -> TestBoot:
    """``test_boot``, its verdict kept under ``record_dir`` for what ``facts()`` (:func:`test_boot_facts`, run in
    a worker thread) returns: a later call with the same facts, in any process, answers from the record instead of
    booting (``None`` facts: nothing is remembered)."""

    async def cached() -> bool:
        found = await anyio.to_thread.run_sync(facts)
        if found is None:
            return await test_boot()
        text = json.dumps(found, sort_keys=True)
        record = record_dir / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(await anyio.Path(record).read_text())
            if isinstance(data, dict) and data.get("facts") == found and isinstance(data.get("kvm"), bool):
                return bool(data["kvm"])
        verdict = await test_boot()
        with contextlib.suppress(OSError):  # only a record: failing to write it costs a test boot next time
            await anyio.Path(record_dir).mkdir(parents=True, exist_ok=True)
            tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
            await anyio.Path(tmp).write_text(json.dumps({"facts": found, "kvm": verdict}))
            await anyio.Path(tmp).replace(record)
        return verdict

    return cached


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
