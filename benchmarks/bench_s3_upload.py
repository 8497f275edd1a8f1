"""Benchmark: publish a 512 MiB image to moto's S3 server over HTTP on 127.0.0.1.

Compared in the same run, against the same moto server (objects deleted between phases, since moto keeps them in
memory):
  1. one region: the s3-vhd publisher (SHA-256 of the image, multipart with per-part SHA-256 checksums,
     verification) vs aioboto3's ``upload_file`` with default settings (goal: ratio at least 1.0);
  2. three regions: the publisher (default ``replication = copy``: one upload, then two server-side CopyObject
     calls) vs three sequential ``upload_file`` calls; and the publisher with ``replication = upload`` (three
     concurrent uploads). Comparing the two is the measurement behind the ``copy`` default.
Ratios are baseline time / publisher time (above 1 = the publisher is faster). Best of ``--repeat`` runs.

Run: ``.venv/bin/python benchmarks/bench_s3_upload.py [--size-mib 512] [--repeat 2]``
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import anyio

from aib_provider_s3_vhd.distributors import S3ImagePublisher
from aib_provider_s3_vhd.specs import S3ImageDistributor
from aib_sdk.artifacts import Artifact
from aib_sdk.config import Config
from aib_sdk.testing.fakes import make_run_context

MIB = 1 << 20
REGIONS = ["eu-west-1", "us-west-2", "ap-southeast-2"]


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start")


def make_image(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // (8 * MIB)):
            f.write(os.urandom(8 * MIB))


async def main(size_mib: int, repeat: int) -> None:
    import aioboto3

    proc, url = start_moto()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_ENDPOINT_URL_S3=url,
        AWS_DEFAULT_REGION="us-east-1",
    )
    session = aioboto3.Session()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
            work = Path(tmp)
            image = work / "disk.raw"
            make_image(image, size_mib * MIB)
            buckets = {r: f"bench-{r}" for r in REGIONS}
            for region, bucket in buckets.items():
                async with session.client("s3", region_name=region) as s3:
                    await s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})

            async def clear() -> None:
                for region, bucket in buckets.items():
                    async with session.client("s3", region_name=region) as s3:
                        for obj in (await s3.list_objects_v2(Bucket=bucket)).get("Contents", []):
                            await s3.delete_object(Bucket=bucket, Key=obj["Key"])

            async def baseline(regions: list[str]) -> float:
                await clear()
                start = time.perf_counter()
                for region in regions:
                    async with session.client("s3", region_name=region) as s3:
                        await s3.upload_file(str(image), buckets[region], "disk.raw")
                return time.perf_counter() - start

            async def ours(regions: list[str], replication: str = "copy") -> float:
                await clear()
                artifact = Artifact(path=image, format="raw", virtual_size=size_mib * MIB)
                spec = S3ImageDistributor.model_validate(
                    {
                        "type": "S3Image",
                        "runOutputName": "bench",
                        "key": "disk.raw",
                        "format": "raw",
                        "regions": [{"bucket": buckets[r], "region": r} for r in regions],
                    }
                )
                env = {"AIB_HOME": str(work / "home"), "AIB_CACHE": str(work / "cache")}
                ctx = make_run_context(work, config=Config({"s3-vhd": {"replication": replication}}, env))
                start = time.perf_counter()
                await S3ImagePublisher().publish(artifact, spec, ctx)
                return time.perf_counter() - start

            results: dict[str, list[float]] = {}
            for _ in range(repeat):
                for name, run in (
                    ("upload_file x1", lambda: baseline(REGIONS[:1])),
                    ("s3-vhd x1", lambda: ours(REGIONS[:1])),
                    ("upload_file x3 sequential", lambda: baseline(REGIONS)),
                    ("s3-vhd x3 (upload)", lambda: ours(REGIONS, "upload")),
                    ("s3-vhd x3 (copy)", lambda: ours(REGIONS, "copy")),
                ):
                    results.setdefault(name, []).append(await run())
            await clear()
    finally:
        proc.terminate()
        proc.wait()

    best = {k: min(v) for k, v in results.items()}
    print(f"image: {size_mib} MiB random data, moto S3 server on 127.0.0.1, best of {repeat}")
    for name, value in best.items():
        print(
            f"  {name:28s} {value:7.2f} s   ({size_mib / value:6.1f} MiB/s per image)   runs: "
            + ", ".join(f"{v:.2f}" for v in results[name])
        )
    print(
        f"ratio 1 region  (upload_file / s3-vhd):            {best['upload_file x1'] / best['s3-vhd x1']:.2f}x "
        "(goal >= 1.0x)"
    )
    print(
        f"ratio 3 regions (3 x upload_file / s3-vhd copy):   "
        f"{best['upload_file x3 sequential'] / best['s3-vhd x3 (copy)']:.2f}x"
    )
    print(
        f"ratio 3 regions (3 x upload_file / s3-vhd upload): "
        f"{best['upload_file x3 sequential'] / best['s3-vhd x3 (upload)']:.2f}x"
    )
    print(
        f"replication: time(upload) / time(copy) = {best['s3-vhd x3 (upload)'] / best['s3-vhd x3 (copy)']:.2f} "
        "(above 1: copy is faster)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    anyio.run(main, args.size_mib, args.repeat)
