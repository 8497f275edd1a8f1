"""QEMU build benchmark: the tiny-guest build through the SDK vs the same steps by hand, in one run.

Both sides do the same work on the same cached tiny test guest, with QEMU under the same accelerator and shape:
boot (direct kernel boot, NVMe root, NoCloud seed, user-mode networking with a loopback port forward), one Shell
step (``sudo`` line), a 1 MiB File step, power off, and a qcow2 output.

- **SDK**: ``Builder`` on a template (PlatformImage ``aib-sdk/tiny-test-guest`` → Shell → File → ``DiskFile`` qcow2).
- **By hand**: a bash script with ``qemu-img create`` (overlay), ``qemu-system-x86_64``, ``ssh``/``scp`` with the
  same kind of key and a pinned host key over one multiplexed connection (``ControlMaster``), ``qemu-img convert``.
  Its seed and keys are made before the clock starts, so the SDK pays for its key generation and the baseline
  does not.

The sides alternate for ``--rounds`` rounds (default 3) and the medians are compared. Goal: SDK ≤ 1.15x by hand.
Usage: ``python benchmarks/bench_qemu_build.py [--rounds N] [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from aib_provider_qemu import seed, vmsizes
from aib_provider_qemu.accel import accel_args
from aib_provider_qemu.host import free_port
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.options import BuildOptions
from aib_sdk.testing.tiny_guest import SPEC, ensure_tiny_guest

VM_SIZE = "Standard_B1s"
GOAL = 1.15
USER = "packer"

MANUAL_SCRIPT = r"""#!/usr/bin/env bash
# The tiny-guest build by hand: overlay, boot, one shell step, a 1 MiB upload, power off, qcow2 out.
set -euo pipefail
W="$WORK"
qemu-img create -q -f qcow2 -F raw -b "$BASE" "$W/os.qcow2"
qemu-system-x86_64 -name aib-bench-manual -machine q35 $ACCEL -smp "$CPUS" -m "$MEM" -nodefaults \
  -no-user-config -display none -serial "file:$W/serial.log" -daemonize -pidfile "$W/qemu.pid" \
  -drive "if=none,id=os,file=$W/os.qcow2,format=qcow2,discard=unmap" -device nvme,drive=os,serial=aib-os \
  -drive "if=none,id=seed,file=$SEED,format=raw,readonly=on" -device virtio-blk-pci,drive=seed,serial=aib-seed \
  -nic "user,restrict=on,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:$PORT-:22" -device virtio-rng-pci \
  -kernel "$KERNEL" -append "$KARGS"
pid=$(cat "$W/qemu.pid")
until grep -q "$READY" "$W/serial.log" 2>/dev/null; do sleep 0.05; done
OPTS=(-i "$KEY" -o UserKnownHostsFile="$W/known_hosts" -o StrictHostKeyChecking=yes -o BatchMode=yes
      -o HostKeyAlias=aib-bench -o ConnectTimeout=30
      -o ControlMaster=auto -o ControlPath="$W/ssh-%C" -o ControlPersist=60)
ssh "${OPTS[@]}" -p "$PORT" "$USER@127.0.0.1" 'echo "built by hand" | sudo tee /etc/aib-bench >/dev/null'
scp -q "${OPTS[@]}" -P "$PORT" "$PAYLOAD" "$USER@127.0.0.1:/tmp/payload.bin"
ssh "${OPTS[@]}" -p "$PORT" "$USER@127.0.0.1" 'sync; sudo poweroff -f' || true
ssh "${OPTS[@]}" -p "$PORT" -O exit "$USER@127.0.0.1" 2>/dev/null || true
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
qemu-img convert -O qcow2 "$W/os.qcow2" "$OUT"
"""


def template(payload: Path, payload_sha: str, out: Path) -> dict[str, object]:
    return {
        "name": "bench-qemu-build",
        "properties": {
            "source": dict(SPEC),
            "vmProfile": {"vmSize": VM_SIZE},
            "customize": [
                {
                    "type": "Shell",
                    "name": "shell-step",
                    "inline": ["echo 'built by aib-sdk' | sudo tee /etc/aib-bench >/dev/null"],
                },
                {
                    "type": "File",
                    "name": "file-step",
                    "sourceUri": payload.as_uri(),
                    "sha256Checksum": payload_sha,
                    "destination": "/tmp/payload.bin",
                },
            ],
            "distribute": [
                {"type": "DiskFile", "uri": out.as_uri(), "format": "qcow2", "runOutputName": "disk"},
            ],
        },
    }


async def run_sdk(work: Path, payload: Path, payload_sha: str, config: Config, index: int) -> float:
    out = work / f"sdk-{index}.qcow2"
    builder = Builder(template(payload, payload_sha, out), options=BuildOptions(config=config))
    started = time.perf_counter()
    result = await builder.run()
    elapsed = time.perf_counter() - started
    if result.run_state != "Succeeded" or not out.is_file():
        raise SystemExit(f"SDK build {result.run_state}: {result.last_run_status.message}")
    return elapsed


async def prepare_manual(work: Path) -> dict[str, str]:
    """Keys, the seed ISO and known_hosts for the by-hand side (made before its clock starts)."""
    keys = await seed.generate_keys()
    key_file = work / "id_ed25519"
    key_file.write_bytes(bytes(keys.client.export_private_key("openssh")))
    key_file.chmod(0o600)
    (work / "known_hosts").write_text("".join(f"aib-bench {line}\n" for line in keys.host_public))
    seed_iso = work / "seed.iso"
    await seed.write_seed(seed_iso, user=USER, keys=keys, instance_id="aib-bench")
    return {"KEY": str(key_file), "SEED": str(seed_iso)}


async def run_manual(work: Path, env: dict[str, str], index: int) -> float:
    round_dir = work / f"manual-{index}"
    round_dir.mkdir()
    shutil.copy(work / "known_hosts", round_dir / "known_hosts")
    script = work / "manual.sh"
    script.write_text(MANUAL_SCRIPT)
    full = {
        **os.environ,
        **env,
        "WORK": str(round_dir),
        "PORT": str(free_port()),
        "OUT": str(work / f"manual-{index}.qcow2"),
    }
    started = time.perf_counter()
    result = await anyio.run_process(["bash", str(script)], env=full, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"manual build failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return elapsed


async def main(rounds: int, as_json: bool) -> int:
    config = Config.load()
    guest = await ensure_tiny_guest(config.cache)
    shape = vmsizes.shape(VM_SIZE)
    work = Path(tempfile.mkdtemp(prefix="aib-bench-qemu-"))
    try:
        payload = work / "payload.bin"
        payload.write_bytes(os.urandom(1 << 20))
        payload_sha = hashlib.sha256(payload.read_bytes()).hexdigest()
        env = await prepare_manual(work)
        env |= {
            "BASE": str(guest.disk),
            "KERNEL": str(guest.kernel),
            "KARGS": guest.kernel_args,
            "READY": guest.ready_line,
            "ACCEL": " ".join(accel_args("tcg")),
            "CPUS": str(shape.cpus),
            "MEM": str(shape.memory_mib),
            "PAYLOAD": str(payload),
            "USER": USER,
        }
        sdk_times: list[float] = []
        manual_times: list[float] = []
        for index in range(rounds):
            manual_times.append(await run_manual(work, env, index))
            sdk_times.append(await run_sdk(work, payload, payload_sha, config, index))
            print(f"round {index + 1}: sdk {sdk_times[-1]:.2f} s, by hand {manual_times[-1]:.2f} s", file=sys.stderr)
        sdk, manual = statistics.median(sdk_times), statistics.median(manual_times)
        ratio = sdk / manual
        report = {
            "benchmark": "qemu-build",
            "sdk_seconds": round(sdk, 2),
            "manual_seconds": round(manual, 2),
            "ratio": round(ratio, 3),
            "goal": GOAL,
            "rounds": rounds,
            "cpus": shape.cpus,
            "memory_mib": shape.memory_mib,
            "load_average": os.getloadavg()[0],
        }
        if as_json:
            print(json.dumps(report))
        else:
            print(
                f"tiny-guest build via SDK: {sdk:.2f} s   by hand (qemu + ssh/scp + qemu-img): {manual:.2f} s   "
                f"ratio {ratio:.2f}x (goal <= {GOAL}x){'' if ratio <= GOAL else '  ABOVE GOAL'}"
            )
        return 0
    finally:
        _stop_leftovers(work)
        shutil.rmtree(work, ignore_errors=True)


def _stop_leftovers(work: Path) -> None:
    """Kill a by-hand QEMU that a failed round left running (by the pid it wrote)."""
    for pidfile in work.glob("manual-*/qemu.pid"):  # QEMU removes it when it exits
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.exit(anyio.run(main, args.rounds, args.json))
