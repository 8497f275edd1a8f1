"""Benchmark: a 20 MiB upload over WinRM (NTLM-sealed HTTP) to the WinRM test server, in the same run:

- aib-sdk's upload: envelope-sized chunks streamed to PowerShell's stdin (base64 lines), over several shells in
  parallel, reassembled and sha256-checked on the guest (and the same with one shell);
- the one-chunk-per-command way (Packer's winrmcp: ``echo <base64> >> file`` per ~6 KB in one shell, then decode).

The server is the project's WinRM test server (not Windows) in its own process, so client and "guest" do not share
a CPU core's interpreter; it pays the same NTLM sealing and SOAP costs per request as Windows would, not Windows'
PowerShell costs. Prints times, request counts and the ratio.

    .venv/bin/python benchmarks/bench_winrm_upload.py [--mib 20] [--parallel 3] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio

from aib_sdk.communicators.winrm import WinRMCommunicator

USER, PASSWORD = "bench", "Bench-Pa55"


async def _timed(comm: WinRMCommunicator, local: Path, remote: str, naive: bool) -> float:
    await comm.run("echo warm-up")  # imports and the NTLM handshake are not part of the measurement
    start = time.perf_counter()
    if naive:
        await comm.upload_naive(local, remote)
    else:
        await comm.upload(local, remote)
    elapsed = time.perf_counter() - start
    await comm.aclose()
    return elapsed


async def main(mib: float, parallel: int, latency: float) -> None:
    size = int(mib * 1024 * 1024)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "payload.bin"
        data = os.urandom(size)
        await anyio.Path(local).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        del data
        command = [sys.executable, "-m", "aib_sdk.testing.winrm_server", "--username", USER, "--password", PASSWORD]
        command += ["--latency", str(latency)]
        async with await anyio.open_process(command) as server:
            assert server.stdout is not None
            port = int((await server.stdout.receive()).decode().split()[1])

            def comm(n: int) -> WinRMCommunicator:
                return WinRMCommunicator("127.0.0.1", port, username=USER, password=PASSWORD, upload_parallel=n)

            fast = await _timed(comm(parallel), local, "C:\\Windows\\Temp\\fast.bin", naive=False)
            single = await _timed(comm(1), local, "C:\\Windows\\Temp\\single.bin", naive=False)
            naive = await _timed(comm(1), local, "C:\\Windows\\Temp\\naive.bin", naive=True)
            server.terminate()
    chunk = comm(1).chunk_size
    print(
        f"WinRM upload of {mib:g} MiB (sha256 {digest[:12]}…) to the WinRM test server, NTLM-sealed HTTP, "
        f"{latency * 1000:g} ms added per response"
    )
    print(f"  aib-sdk, {parallel} shells in parallel ({chunk} B/Send): {fast:8.2f} s  {mib / fast:6.2f} MiB/s")
    print(f"  aib-sdk, 1 shell:                            {single:8.2f} s  {mib / single:6.2f} MiB/s")
    print(f"  one chunk per command (winrmcp, 6000 B/cmd): {naive:8.2f} s  {mib / naive:6.2f} MiB/s")
    print(f"  ratio one-chunk-per-command / aib-sdk: {naive / fast:.1f}x (1 shell: {naive / single:.1f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="WinRM upload benchmark")
    parser.add_argument("--mib", type=float, default=20.0)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the server adds to every response")
    args = parser.parse_args()
    anyio.run(main, args.mib, args.parallel, args.latency)
