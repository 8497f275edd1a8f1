"""QEMU build benchmark: ``aib build`` on the tiny guest vs the same steps by hand, in one run, same guest.

The guest is the same for both sides: the cached tiny test guest's raw disk (kernel booted directly, busybox init,
dropbear, a ``sudo`` shim), **baked** once before the clock starts (one boot with a seed leaves the build user, its
key and the dropbear host keys on the disk, and ``/etc/aib-static`` so it reads no seed again). Both sides boot it on
a qcow2 overlay with 2 vCPUs, 512 MiB, TCG and ``-nic user`` with a loopback port forward, run one ``sudo`` shell
line, upload 1 MiB, power off and write a qcow2.

- **aib**: ``aib build template.json --json --no-cache`` in a new process (CLI start and plugin loading included),
  the source a ``DiskImage`` with ``access: static`` and the key/host key given as the qemu provider's ``ssh_*``
  settings. The guest prints a ready line but aib is not told about it: readiness is found by probing SSH. The step
  cache is off so every round runs every step as the script does (its cost on a cold build: ``bench_step_cache.py``).
- **By hand**: a bash script: ``qemu-img create``, ``qemu-system-x86_64``, wait for the ready line on the serial
  log, ``ssh``/``scp`` over one multiplexed OpenSSH connection, ``sync; sudo poweroff -f``, ``qemu-img convert``.

Rows (medians of ``--rounds``, default 5, after one warm-up round per side; the sides alternate):
total (goal <= 1.15x median, <= 1.3x worst round), time before QEMU starts (goal < 0.3 s), readiness (from the guest's
ready line on the serial console to the first login, by hand ``ssh … true``; goal < 0.3 s; aib's serial follower
reads every 0.1 s, so its side can read up to 0.1 s short), shutdown (goal <= 1.3x by hand).
The machine is shared: numbers are noisy.
Usage: ``python benchmarks/bench_qemu_build.py [--rounds N] [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio

from aib_provider_qemu import seed
from aib_provider_qemu.accel import accel_args
from aib_provider_qemu.host import free_port
from aib_sdk.config import Config
from aib_sdk.testing.tiny_guest import ensure_tiny_guest

AIB = Path(sys.executable).parent / "aib"
CPUS, MEM = 2, 512
USER = "packer"
GOALS = {"total": 1.15, "worst": 1.3, "before_qemu": 0.3, "readiness": 0.3, "shutdown": 1.3}

QEMU = r"""qemu-system-x86_64 -name "aib-bench-$NAME" -machine q35 $ACCEL -smp "$CPUS" -m "$MEM" -nodefaults \
  -no-user-config -display none -serial "file:$W/serial.log" -daemonize -pidfile "$W/qemu.pid" \
  -drive "if=none,id=os,file=$DISK,format=$FMT,discard=unmap" -device nvme,drive=os,serial=aib-os $SEEDARGS \
  -nic "user,restrict=on,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:$PORT-:22" -device virtio-rng-pci \
  -kernel "$KERNEL" -append "$KARGS"
pid=$(cat "$W/qemu.pid")
until grep -q "$READY" "$W/serial.log" 2>/dev/null; do sleep 0.05; done
OPTS=(-i "$KEY" -o UserKnownHostsFile="$KNOWN" -o StrictHostKeyChecking=yes -o BatchMode=yes
      -o HostKeyAlias=aib-bench -o ConnectTimeout=30
      -o ControlMaster=auto -o ControlPath="$W/ssh-%C" -o ControlPersist=60)
"""
BAKE_SCRIPT = (
    r"""#!/usr/bin/env bash
# Bake the tiny guest for static access: boot it once with a seed, mark it, power off.
set -euo pipefail
W="$WORK"; DISK="$BAKED"; FMT=raw; NAME=bake
SEEDARGS="-drive if=none,id=seed,file=$SEED,format=raw,readonly=on -device virtio-blk-pci,drive=seed,serial=aib-seed"
"""
    + QEMU
    + r"""ssh "${OPTS[@]}" -p "$PORT" "$USER@127.0.0.1" 'sudo touch /etc/aib-static; sync; sudo poweroff -f' || true
ssh "${OPTS[@]}" -p "$PORT" -O exit "$USER@127.0.0.1" 2>/dev/null || true
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
"""
)
MANUAL_SCRIPT = (
    r"""#!/usr/bin/env bash
# The build by hand: overlay, boot, one shell step, a 1 MiB upload, power off, qcow2 out.
set -euo pipefail
W="$WORK"; DISK="$W/os.qcow2"; FMT=qcow2; NAME=manual; SEEDARGS=""
stamp() { echo "$1 $(date +%s.%N)" >> "$W/times"; }
stamp start
qemu-img create -q -f qcow2 -F raw -b "$BAKED" "$W/os.qcow2"
stamp qemu
"""
    + QEMU
    + r"""stamp ready
ssh "${OPTS[@]}" -p "$PORT" "$USER@127.0.0.1" true
stamp login
ssh "${OPTS[@]}" -p "$PORT" "$USER@127.0.0.1" 'echo "built by hand" | sudo tee /etc/aib-bench >/dev/null'
scp -q "${OPTS[@]}" -P "$PORT" "$PAYLOAD" "$USER@127.0.0.1:/tmp/payload.bin"
stamp poweroff
ssh "${OPTS[@]}" -p "$PORT" "$USER@127.0.0.1" 'sync; sudo poweroff -f' || true
ssh "${OPTS[@]}" -p "$PORT" -O exit "$USER@127.0.0.1" 2>/dev/null || true
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
stamp off
qemu-img convert -O qcow2 "$W/os.qcow2" "$OUT"
"""
)


def template(work: Path, guest_kernel_args: str, out: Path, payload_sha: str) -> dict[str, object]:
    return {
        "name": "bench-qemu-build",
        "properties": {
            "source": {
                "type": "DiskImage",
                "uri": (work / "baked.raw").as_uri(),
                "format": "raw",
                "kernel": (work / "vmlinuz").as_uri(),
                "kernelArgs": guest_kernel_args,
                "diskInterface": "nvme",
                "access": "static",
            },
            "customize": [
                {"type": "Shell", "name": "shell-step", "inline": ["echo 'built by aib' | sudo tee /etc/aib-bench"]},
                {
                    "type": "File",
                    "name": "file-step",
                    "sourceUri": (work / "payload.bin").as_uri(),
                    "sha256Checksum": payload_sha,
                    "destination": "/tmp/payload.bin",
                },
            ],
            "distribute": [{"type": "DiskFile", "uri": out.as_uri(), "format": "qcow2", "runOutputName": "disk"}],
        },
    }


_LINE = re.compile(r"^(\S+Z) (.*)$")


def _log_times(log: Path) -> dict[str, float]:
    """Epoch times of the marks in an aib run's customization.log (and the shutdown's own total)."""
    marks: dict[str, float] = {}
    for raw in log.read_text(encoding="utf-8").splitlines():
        match = _LINE.match(raw)
        if not match:
            continue
        text = match.group(2)
        epoch = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        if "qemu (info): booting" in text:
            marks.setdefault("qemu", epoch)
        elif "serial (serial): AIB-TINY-GUEST-READY" in text:
            marks.setdefault("serial_ready", epoch)
        elif "qemu (info): guest ready on" in text:
            marks.setdefault("ready", epoch)
        elif "qemu (info): powered off" in text or "qemu (info): still running" in text:
            found = re.search(r"([\d.]+) s in all\)", text)
            if found:
                marks["shutdown"] = marks.get("shutdown", 0.0) + float(found.group(1))
    return marks


def run_aib(work: Path, env: dict[str, str], aib_env: dict[str, str], index: int) -> dict[str, float]:
    out = work / f"aib-{index}.qcow2"
    file = work / "template.json"
    data = template(work, env["KARGS"], out, env["PAYLOAD_SHA"])
    file.write_text(json.dumps(data))
    spawned = time.time()
    started = time.perf_counter()
    proc = subprocess.run([str(AIB), "build", str(file), "--json", "--no-cache"], env=aib_env, capture_output=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"aib build failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-3000:]}")
    result = json.loads(proc.stdout)
    log = Path(result["stagingDirectory"]) / "runs" / result["runId"] / "customization.log"
    marks = _log_times(log)
    row = {"total": elapsed}
    if "qemu" in marks:
        row["before_qemu"] = marks["qemu"] - spawned
    if "ready" in marks and "serial_ready" in marks:
        row["readiness"] = marks["ready"] - marks["serial_ready"]
    if "shutdown" in marks:
        row["shutdown"] = marks["shutdown"]
    return row


def run_manual(work: Path, env: dict[str, str], index: int) -> dict[str, float]:
    round_dir = work / f"manual-{index}"
    round_dir.mkdir()
    script = work / "manual.sh"
    script.write_text(MANUAL_SCRIPT)
    full = {**env, "WORK": str(round_dir), "PORT": str(free_port()), "OUT": str(work / f"manual-{index}.qcow2")}
    started = time.perf_counter()
    proc = subprocess.run(["bash", str(script)], env=full, capture_output=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"manual build failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    times = dict(line.split() for line in (round_dir / "times").read_text().splitlines())
    t = {k: float(v) for k, v in times.items()}
    return {
        "total": elapsed,
        "before_qemu": t["qemu"] - t["start"],
        "readiness": t["login"] - t["ready"],
        "shutdown": t["off"] - t["poweroff"],
    }


def prepare(work: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The baked guest, keys, known_hosts, payload; the environments of both sides."""
    config = Config.load()
    guest = anyio.run(ensure_tiny_guest, config.cache)
    keys = anyio.run(seed.generate_keys)
    key_file = work / "id_ed25519"
    key_file.write_bytes(bytes(keys.client.export_private_key("openssh")))
    key_file.chmod(0o600)
    known = work / "known_hosts"
    known.write_text("".join(f"aib-bench {line}\n" for line in keys.host_public))
    seed_iso = work / "seed.iso"
    anyio.run(functools.partial(seed.write_seed, seed_iso, user=USER, keys=keys, instance_id="aib-bench"))
    subprocess.run(["cp", "--sparse=always", str(guest.disk), str(work / "baked.raw")], check=True)
    shutil.copy(guest.kernel, work / "vmlinuz")
    payload = work / "payload.bin"
    payload.write_bytes(os.urandom(1 << 20))
    env = {
        **os.environ,
        "BAKED": str(work / "baked.raw"),
        "KERNEL": str(work / "vmlinuz"),
        "KARGS": guest.kernel_args,
        "READY": guest.ready_line,
        "ACCEL": " ".join(accel_args("tcg")),
        "CPUS": str(CPUS),
        "MEM": str(MEM),
        "PAYLOAD": str(payload),
        "PAYLOAD_SHA": hashlib.sha256(payload.read_bytes()).hexdigest(),
        "USER": USER,
        "KEY": str(key_file),
        "KNOWN": str(known),
        "SEED": str(seed_iso),
    }
    bake_dir = work / "bake"
    bake_dir.mkdir()
    (work / "bake.sh").write_text(BAKE_SCRIPT)
    bake_env = {**env, "WORK": str(bake_dir), "PORT": str(free_port())}
    subprocess.run(["bash", str(work / "bake.sh")], env=bake_env, check=True, timeout=600)
    aib_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as installed: bytecode cached
    aib_env.update(
        AIB_HOME=str(work / "aib-home"),
        AIB_CACHE=str(work / "aib-cache"),
        XDG_CONFIG_HOME=str(work / "no-config"),
        AIB_QEMU_ACCEL="tcg",
        AIB_QEMU_CPUS=str(CPUS),
        AIB_QEMU_MEMORY_MIB=str(MEM),
        AIB_QEMU_SSH_USER=USER,
        AIB_QEMU_SSH_PRIVATE_KEY=str(key_file),
        AIB_QEMU_SSH_HOST_KEY=str(known),
    )
    aib_env.pop("AIB_CONFIG", None)
    return env, aib_env


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s" if values else "   n/a"


def main(rounds: int, as_json: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="aib-bench-qemu-"))
    try:
        env, aib_env = prepare(work)
        run_manual(work, env, -1)  # warm-up (page cache, ssh), not counted
        run_aib(work, env, aib_env, -1)  # warm-up: the plugin catalogue and the source's digest get recorded
        aib_rows: list[dict[str, float]] = []
        manual_rows: list[dict[str, float]] = []
        for index in range(rounds):
            manual_rows.append(run_manual(work, env, index))
            aib_rows.append(run_aib(work, env, aib_env, index))
            a, m = aib_rows[-1], manual_rows[-1]
            print(f"round {index + 1}: aib {a['total']:.2f} s, by hand {m['total']:.2f} s", file=sys.stderr)

        def col(rows: list[dict[str, float]], key: str) -> list[float]:
            return [r[key] for r in rows if key in r]

        total_a, total_m = statistics.median(col(aib_rows, "total")), statistics.median(col(manual_rows, "total"))
        worst = max(a["total"] / m["total"] for a, m in zip(aib_rows, manual_rows, strict=True))
        shut_a, shut_m = col(aib_rows, "shutdown"), col(manual_rows, "shutdown")
        ready_a = col(aib_rows, "readiness")
        report = {
            "benchmark": "qemu-build",
            "rounds": rounds,
            "aib_seconds": round(total_a, 2),
            "manual_seconds": round(total_m, 2),
            "ratio": round(total_a / total_m, 3),
            "worst_ratio": round(worst, 3),
            "before_qemu_aib": round(statistics.median(col(aib_rows, "before_qemu")), 3),
            "before_qemu_manual": round(statistics.median(col(manual_rows, "before_qemu")), 3),
            "readiness_aib": round(statistics.median(ready_a), 3) if ready_a else None,
            "readiness_manual": round(statistics.median(col(manual_rows, "readiness")), 3),
            "shutdown_aib": round(statistics.median(shut_a), 3) if shut_a else None,
            "shutdown_manual": round(statistics.median(shut_m), 3),
            "goals": GOALS,
            "load_average": os.getloadavg()[0],
        }
        if as_json:
            print(json.dumps(report))
            return 0

        def verdict(ok: bool) -> str:
            return "ok" if ok else "ABOVE GOAL"

        ratio = report["ratio"]
        print(f"tiny-guest build (median of {rounds}, 2 vCPUs, TCG; load average {report['load_average']:.1f})")
        print(
            f"  total:        aib {total_a:6.2f} s   by hand {total_m:6.2f} s   "
            f"ratio {ratio:.2f}x, worst {worst:.2f}x  "
            f"(goal <= {GOALS['total']}x, worst <= {GOALS['worst']}x): "
            f"{verdict(total_a / total_m <= GOALS['total'] and worst <= GOALS['worst'])}"
        )
        bq = report["before_qemu_aib"]
        print(
            f"  before QEMU:  aib {bq:6.3f} s   by hand {report['before_qemu_manual']:6.3f} s   "
            f"(goal < {GOALS['before_qemu']} s): {verdict(bq < GOALS['before_qemu'])}"
        )
        rd = report["readiness_aib"]
        print(
            f"  readiness:    aib {rd if rd is not None else float('nan'):6.3f} s   by hand "
            f"{report['readiness_manual']:6.3f} s from the guest's ready line to the first login "
            f"(goal < {GOALS['readiness']} s): {verdict(rd is not None and rd < GOALS['readiness'])}"
        )
        sa, sm = report["shutdown_aib"], report["shutdown_manual"]
        if sa is not None:
            print(
                f"  shutdown:     aib {sa:6.3f} s   by hand {sm:6.3f} s   ratio {sa / sm:.2f}x "
                f"(goal <= {GOALS['shutdown']}x): {verdict(sa / sm <= GOALS['shutdown'])}"
            )
        return 0
    finally:
        _stop_leftovers(work)
        shutil.rmtree(work, ignore_errors=True)


def _stop_leftovers(work: Path) -> None:
    """Kill a by-hand QEMU that a failed round left running (by the pid it wrote)."""
    for pidfile in [*work.glob("manual-*/qemu.pid"), *work.glob("bake/qemu.pid")]:  # QEMU removes it when it exits
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.exit(main(args.rounds, args.json))
