"""Run Azurite (Microsoft's real storage emulator) on 127.0.0.1 for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SECOND_ACCOUNT = "aibreplica2"
SECOND_KEY = "c2Vjb25kLWFjY291bnQta2V5LWZvci10ZXN0cy1vbmx5LTEyMzQ1Njc4OTA="
PACKAGE_DIR = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Azurite:
    """A running Azurite blob service: its base URL and the accounts it knows (name → base64 key)."""

    host: str
    port: int
    accounts: dict[str, str]

    def endpoint(self, account: str) -> str:
        return f"http://{self.host}:{self.port}/{account}"

    def config(self) -> dict[str, object]:
        """An ``[azure]`` table with every account configured (``storage.<name>.blob_endpoint``/``key``)."""
        return {
            "storage": {n: {"blob_endpoint": self.endpoint(n), "key": k} for n, k in self.accounts.items()},
        }


def azurite_binary() -> Path:
    """``providers/azure/.npm/node_modules/.bin/azurite-blob`` (installed from npm-packages.txt)."""
    return PACKAGE_DIR / ".npm" / "node_modules" / ".bin" / "azurite-blob"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def run_azurite(location: Path, *, timeout: float = 60.0) -> Iterator[Azurite]:
    """Start ``azurite-blob`` with two accounts in ``location``; stop it (by its PID) on exit. Synchronous."""
    binary = azurite_binary()
    if not binary.exists():
        raise RuntimeError(f"Azurite is not installed: npm install --prefix {binary.parents[2]} azurite@3.35.0")
    port = free_port()
    accounts = {DEV_ACCOUNT: DEV_KEY, SECOND_ACCOUNT: SECOND_KEY}
    env = dict(os.environ, AZURITE_ACCOUNTS=";".join(f"{n}:{k}" for n, k in accounts.items()))
    args = [
        str(binary),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(location),
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
        "--silent",
    ]
    log = open(location / "azurite.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Azurite exited with {proc.returncode}; see {location / 'azurite.log'}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/{DEV_ACCOUNT}?comp=list", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("Azurite did not start in time") from None
                time.sleep(0.2)
        yield Azurite("127.0.0.1", port, accounts)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
