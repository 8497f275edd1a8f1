"""Benchmark: upload a 1 GiB fixed VHD holding 25 % data (256 MiB) to Azurite as a page blob.

Compared in the same run, against the same Azurite on 127.0.0.1, one blob at a time (each deleted afterwards):
  (a) the provider's sparse-aware upload (8 parallel 4 MiB Put Page calls, all-zero ranges skipped),
  (b) the same upload writing every range (``skip_zero=False``): what a naive page-blob uploader sends,
  (c) azure-storage-blob's ``upload_blob(blob_type="PageBlob", max_concurrency=8)`` (the official SDK).
The image sha256 recorded in metadata is precomputed for (a) and (b) (the SDK records none); (a) is also timed
computing it while uploading, as the VHD distributor does when the artifact carries no digest.
Goal: (a) <= 0.35x (b).

Run: ``.venv/bin/python benchmarks/bench_azure_upload.py [--repeat 1]``
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import anyio
import httpx

from aib_provider_azure.blob import BlobService
from aib_provider_azure.settings import AzureSettings
from aib_provider_azure.testing.azurite import DEV_ACCOUNT, DEV_KEY, run_azurite
from aib_provider_azure.upload import upload_page_blob
from aib_sdk.config import Config

GIB, MIB = 1 << 30, 1 << 20


def make_vhd(path: Path) -> str:
    """1 GiB + 512: every 4th 4 MiB range random data (25 %), holes elsewhere, a VHD-like footer; its sha256."""
    rng = random.Random(11)
    size = GIB + 512
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(0, 256, 4):
            f.seek(i * 4 * MIB)
            f.write(rng.randbytes(4 * MIB))
        f.seek(GIB)
        f.write(b"conectix" + rng.randbytes(504))
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()


async def ours(endpoint: str, path: Path, name: str, *, skip_zero: bool, sha256: str | None) -> float:
    config = Config({"azure": {"storage": {DEV_ACCOUNT: {"blob_endpoint": endpoint, "key": DEV_KEY}}}}, {})
    settings = AzureSettings.from_config(config)
    blob = settings.parse_blob_uri(f"{endpoint}/bench/{name}.vhd")
    assert blob is not None
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        service = BlobService(client)
        started = time.perf_counter()
        stats = await upload_page_blob(service, path, blob, sha256=sha256, concurrency=8, skip_zero=skip_zero)
        elapsed = time.perf_counter() - started
        await service.delete(blob)
    print(f"    {name}: {stats.written_ranges}/{stats.total_ranges} ranges written, {elapsed:.2f}s")
    return elapsed


def sdk(endpoint: str, path: Path, name: str) -> float:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(endpoint, credential={"account_name": DEV_ACCOUNT, "account_key": DEV_KEY})
    container = service.get_container_client("benchsdk")
    if not container.exists():
        container.create_container()
    blob = container.get_blob_client(f"{name}.vhd")
    started = time.perf_counter()
    with open(path, "rb") as f:
        blob.upload_blob(f, blob_type="PageBlob", length=path.stat().st_size, max_concurrency=8)
    elapsed = time.perf_counter() - started
    blob.delete_blob()
    print(f"    {name}: {elapsed:.2f}s")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-azure-") as tmp:
        work = Path(tmp)
        vhd = work / "disk.vhd"
        digest = make_vhd(vhd)
        (work / "azurite").mkdir()
        with run_azurite(work / "azurite") as azurite:
            endpoint = azurite.endpoint(DEV_ACCOUNT)
            times: dict[str, list[float]] = {"sparse": [], "sparse+sha": [], "full": [], "sdk": []}
            for i in range(args.repeat):
                print(f"round {i + 1}")
                for key, name, skip, sha in (
                    ("sparse", f"sparse{i}", True, digest),
                    ("sparse+sha", f"sparsesha{i}", True, None),
                    ("full", f"full{i}", False, digest),
                ):
                    times[key].append(anyio.run(partial(ours, endpoint, vhd, name, skip_zero=skip, sha256=sha)))
                times["sdk"].append(sdk(endpoint, vhd, f"sdk{i}"))
    med = {k: statistics.median(v) for k, v in times.items()}
    print("\n1 GiB fixed VHD, 25 % data, Azurite on 127.0.0.1 (median of", args.repeat, "run(s))")
    for key, label in (
        ("sparse", "(a) sparse-aware upload"),
        ("sparse+sha", "(a') sparse + sha256 while uploading"),
        ("full", "(b) every range uploaded"),
        ("sdk", "(c) azure-storage-blob upload_blob"),
    ):
        print(f"  {label:40s} {med[key]:7.2f}s")
    print(f"  ratio (a)/(b)  = {med['sparse'] / med['full']:.2f}x   (goal <= 0.35x)")
    print(f"  ratio (a')/(b) = {med['sparse+sha'] / med['full']:.2f}x")
    print(f"  ratio (a)/(c)  = {med['sparse'] / med['sdk']:.2f}x")


if __name__ == "__main__":
    main()
