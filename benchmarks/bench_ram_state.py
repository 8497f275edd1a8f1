"""RAM-state benchmark: restore a saved VM (QEMU ``migrate`` to a file, ``-incoming``) vs boot its disk layer.

On the tiny guest (or ``--guest debian``): boot, run a step, then

- **disk layer** (what the step cache does): ``sync``, freeze the overlay; later a fresh QEMU *boots* the layer
  and the build waits for SSH;
- **RAM state**: ``stop``, freeze the overlay, ``migrate`` the RAM and device state to a file; later a fresh QEMU
  with the same devices on that overlay starts with ``-incoming`` from the file and the build waits for SSH
  (same client key, same pinned host key: the guest is the one that was saved).

Both are timed from "start QEMU" to "a command ran over SSH", alternating for ``--rounds`` rounds; the save
cost (migration time, file size) is reported too. Prints ratio RAM restore / disk boot. The primitives measured
here are the ones the step cache uses (``[cache] ram_state``, docs/caching.md); ``bench_step_cache.py`` measures
whole rebuilds with and without them.

Usage: ``python benchmarks/bench_ram_state.py [--guest tiny|debian] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from aib_provider_qemu import layers, process
from aib_provider_qemu.debian.source import DebianPlatformSource
from aib_provider_qemu.host import QemuBuildHost, free_port
from aib_provider_qemu.machine import QemuMachine
from aib_provider_qemu.tiny_source import TinyGuestSource
from aib_sdk.communicators.ssh import SshCommunicator
from aib_sdk.config import Config
from aib_sdk.errors import BuildHostError
from aib_sdk.models.specs import PlatformImageSource
from aib_sdk.protocols import VmRequest
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.tiny_guest import SPEC

DEBIAN = {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "latest"}


def _replace_arg(args: list[str], flag: str, value: str) -> None:
    args[args.index(flag) + 1] = value


def restart_args(original: list[str], work: Path, overlay: Path, port: int, old_port: int) -> list[str]:
    """The saved VM's command line with a new overlay, QMP socket, pidfile, serial log and forwarded port."""
    args = [a.replace(f"hostfwd=tcp:127.0.0.1:{old_port}-", f"hostfwd=tcp:127.0.0.1:{port}-") for a in original]
    args = [
        (a.split("file=")[0] + f"file={overlay}," + a.split("file=")[1].split(",", 1)[1]) if "id=os," in a else a
        for a in args
    ]
    _replace_arg(args, "-qmp", f"unix:{work / 'qmp.sock'},server=on,wait=off")
    if "-pidfile" in args:
        _replace_arg(args, "-pidfile", str(work / "qemu.pid"))
    else:  # the build VM runs in the foreground (a child of the builder); here QEMU daemonizes
        args += ["-pidfile", str(work / "qemu.pid")]
    if "-daemonize" not in args:
        args.append("-daemonize")
    _replace_arg(args, "-serial", f"file:{work / 'serial.log'}")
    return args


async def wait_ssh(machine: QemuMachine, port: int, timeout: float = 300) -> float:
    """Seconds until a command runs over SSH on ``port`` with the machine's key and pinned host keys."""
    started = time.perf_counter()
    assert isinstance(machine.communicator, SshCommunicator)
    comm = SshCommunicator(
        port=port,
        username=machine.communicator.username,
        client_keys=[str(machine.client_key_file)],
        host_keys=machine.communicator.pinned_host_keys,
    )
    with anyio.fail_after(timeout):
        while True:
            try:
                result = await comm.run("cat /step-output", timeout=10)
                assert result.stdout.strip() == "step ran", result
                break
            except Exception:
                await anyio.sleep(0.1)
    await comm.aclose()
    return time.perf_counter() - started


async def guest_facts(machine: QemuMachine, port: int) -> tuple[str, float, float]:
    """The guest's boot id, how far its clock is behind the host's, and behind after setting it (seconds)."""
    assert isinstance(machine.communicator, SshCommunicator)
    comm = SshCommunicator(
        port=port,
        username=machine.communicator.username,
        client_keys=[str(machine.client_key_file)],
        host_keys=machine.communicator.pinned_host_keys,
    )
    result = await comm.run("cat /proc/sys/kernel/random/boot_id; date +%s", timeout=30)
    boot, clock = result.stdout.split()
    lag = time.time() - float(clock)
    fixed = await layers.set_guest_clock(comm)
    await comm.aclose()
    return boot, lag, fixed


async def start(args: list[str], work: Path) -> tuple[int, float]:
    started = time.perf_counter()
    await anyio.run_process(args)
    pid = int((work / "qemu.pid").read_text())
    return pid, started


async def stop(pid: int) -> None:
    process.send(pid, signal.SIGKILL)
    await process.wait_exit(pid, 10)


async def main(opts: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aib-bench-ram-") as tmp:
        root = Path(tmp)
        config = Config({}, dict(os.environ, AIB_HOME=str(root / "home")))
        ctx = make_run_context(root, config=config)
        spec = PlatformImageSource.model_validate(SPEC if opts.guest == "tiny" else DEBIAN)
        source: Any = TinyGuestSource() if opts.guest == "tiny" else DebianPlatformSource()
        image = await source.resolve(spec, ctx)
        if opts.interface:
            # QEMU 7.2 cannot migrate an NVMe controller (the tiny guest's default): try another interface.
            image = dataclasses.replace(image, disk_interface=opts.interface)
        disk_times: list[float] = []
        ram_times: list[float] = []
        async with QemuBuildHost().start(image, VmRequest(), ctx) as machine:
            assert isinstance(machine, QemuMachine) and machine.pid is not None
            await machine.communicator.run("echo step ran | sudo tee /step-output && sync")
            saved_boot = (await machine.communicator.run("cat /proc/sys/kernel/random/boot_id")).stdout.strip()
            restored: list[tuple[bool, float, float]] = []
            original = Path(f"/proc/{machine.pid}/cmdline").read_bytes().decode().split("\0")[:-1]
            # RAM state: stop the CPUs, freeze the disk, save RAM and devices to a file.
            frozen = machine.overlay
            state = root / "ram.state"
            saved = time.perf_counter()
            try:
                await layers.save_ram_state(machine.qmp_socket, "os", machine.directory / "after-save.qcow2", state)
            except BuildHostError as exc:  # e.g. an NVMe controller (--interface nvme): QEMU 7.2 cannot migrate it
                return {"guest": opts.guest, "refused": str(exc)}
            save_seconds = time.perf_counter() - saved
            await machine.kill("benchmark")
            for _ in range(opts.rounds):
                for kind in ("disk", "ram"):
                    work = root / f"{kind}-run"
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir()
                    overlay = work / "overlay.qcow2"
                    await anyio.run_process(
                        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(frozen), "-F", "qcow2", str(overlay)]
                    )
                    port = free_port()
                    args = restart_args(original, work, overlay, port, machine.port)
                    if kind == "ram":
                        args += ["-incoming", f"exec:cat {state}"]
                    pid, started = await start(args, work)
                    if kind == "ram":
                        await layers.resume_incoming(work / "qmp.sock")
                    await wait_ssh(machine, port)
                    (ram_times if kind == "ram" else disk_times).append(time.perf_counter() - started)
                    if kind == "ram":
                        boot, lag, fixed = await guest_facts(machine, port)
                        restored.append((boot == saved_boot, lag, fixed))
                    await stop(pid)
        return {
            "guest": opts.guest,
            "stateBytes": state.stat().st_size if state.exists() else None,
            "saveSeconds": round(save_seconds, 2),
            "diskBoot": round(statistics.median(disk_times), 2),
            "ramRestore": round(statistics.median(ram_times), 2),
            "ratio": round(statistics.median(ram_times) / statistics.median(disk_times), 3),
            "sameBoot": all(same for same, _, _ in restored),
            "clockBehind": round(max(lag for _, lag, _ in restored), 1),
            "clockBehindAfterFix": round(max(fixed for _, _, fixed in restored), 1),
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guest", choices=("tiny", "debian"), default="tiny")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--interface", choices=("virtio", "nvme", "scsi", "ide"), help="override the guest's disk interface"
    )
    report = anyio.run(main, parser.parse_args())
    if "refused" in report:
        print(f"guest {report['guest']}: QEMU refuses to save this VM's state: {report['refused']}")
        print("  (use a virtio disk: the default of both guests)")
        raise SystemExit(0)
    print(f"guest {report['guest']}: saving RAM took {report['saveSeconds']}s ({report['stateBytes']} bytes)")
    print(f"  boot the disk layer to SSH:   {report['diskBoot']:.2f}s (median)")
    print(f"  restore the RAM state to SSH: {report['ramRestore']:.2f}s (median)")
    print(f"  RAM restore / disk boot: {report['ratio']:.3f}x")
    print(
        f"  restored guest: same boot id as saved {report['sameBoot']}, clock behind by {report['clockBehind']}s"
        f" ({report['clockBehindAfterFix']}s after setting it)"
    )
