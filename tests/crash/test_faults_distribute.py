"""The fault matrix for fetch and distribution, where no VM is needed: the fake build host (its captured disk a
real 4 MiB raw file) with the real distributors against moto, Azurite (behind a fault-injecting proxy), the ARM
test server, the local gallery and files. Per cell: (a) cancel, (b) ``kill -9`` of a builder process then
``aib gc``, (c) the injected fault (HTTP 5xx / reset, disk full). After each: no open multipart upload, no partial
or staging blob, no half-written gallery version, no work directory or open journal entry, and the run's final
state and message name the phase. See docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

import aib_provider_azure.hooks as azure_hooks
import aib_provider_local_gallery.hooks as gallery_hooks
import aib_provider_s3_vhd.hooks as s3_hooks
from aib_provider_azure.credentials import StaticTokenCredential
from aib_provider_azure.testing.arm_server import ArmState, ArmTestServer, run_arm_server
from aib_provider_azure.testing.azurite import Azurite, run_azurite
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.gc import collect_garbage
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.result import BuildResult
from aib_sdk.staging import list_runs
from aib_sdk.testing.crash import leftovers
from aib_sdk.testing.fakes import fake_plugin
from aib_sdk.testing.fault_proxy import FaultProxy, Seen, fault_proxy
from aib_sdk.testing.moto import moto_server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
MIB = 1 << 20
CAPTURE = 4 * MIB
PROVIDERS = ["aib_provider_s3_vhd.hooks", "aib_provider_azure.hooks", "aib_provider_local_gallery.hooks"]
SOURCE = {"type": "FakeImage", "version": "latest"}
RG = "/subscriptions/0000-1111/resourceGroups/rg1/providers/Microsoft.Compute"
DEFINITION = f"{RG}/galleries/gal1/images/ubuntu"
CREDENTIAL = StaticTokenCredential("test")  # the ARM test server runs without a token here


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with run_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture
def arm() -> Iterator[ArmTestServer]:
    with run_arm_server(ArmState(retry_after=0)) as server:
        yield server


@pytest.fixture
def lab(tmp_path: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The environment every cell runs in: AIB_HOME under tmp_path, moto credentials, an aib.toml to fill."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AIB_HOME": str(tmp_path / "home"),
        "AIB_CONFIG": str(tmp_path / "aib.toml"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {"s3-vhd": {"retry_base_delay": 0.01, "retry_max_delay": 0.05, "max_attempts": 2}}


def toml(data: dict[str, Any], prefix: str = "") -> str:
    """A TOML document for nested tables of strings, numbers and booleans (enough for aib.toml)."""
    scalars = [f"{k} = {json.dumps(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for key, value in data.items():
        if isinstance(value, dict):
            name = f'{prefix}."{key}"' if prefix else f'"{key}"'
            out.append(toml(value, name))
    return "\n".join(out) + "\n"


def config_of(settings: dict[str, Any]) -> Config:
    Path(os.environ["AIB_CONFIG"]).write_text(toml(settings))
    return Config.load(None)


def plugins() -> PluginManager:
    fakes = fake_plugin()
    fakes.world.capture_bytes = CAPTURE
    return PluginManager(entry_points=False, plugins=[fakes, s3_hooks, azure_hooks, gallery_hooks])


def template(distribute: list[dict[str, Any]], customize: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"source": SOURCE, "customize": customize or [], "distribute": distribute}


async def build(settings: dict[str, Any], tmpl: dict[str, Any], **options: Any) -> BuildResult:
    config = config_of(settings)
    opts = BuildOptions(config=config, plugins=plugins(), build_host="fake", credential=CREDENTIAL, **options)
    return await Builder(tmpl, options=opts).run()


async def until(started: anyio.Event) -> None:
    """Wait for ``started`` — polled, since the ARM test server sets it from its own thread."""
    while not started.is_set():  # noqa: ASYNC110 - set from another thread: nothing would wake an Event wait
        await anyio.sleep(0.02)


async def cancelled_build(settings: dict[str, Any], tmpl: dict[str, Any], started: anyio.Event) -> BuildResult:
    """The build, cancelled once ``started`` is set (by the gate holding the phase's request)."""
    config = config_of(settings)
    opts = BuildOptions(config=config, plugins=plugins(), build_host="fake", credential=CREDENTIAL)
    builder = Builder(tmpl, options=opts)
    result: list[BuildResult] = []
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                result.append(await builder.run())

            tg.start_soon(run)
            await until(started)
            await builder.cancel()
    return result[0]


async def killed_build(settings: dict[str, Any], tmpl: dict[str, Any], started: anyio.Event, tmp_path: Path) -> Path:
    """The build in a process of its own, ``kill -9``'d once ``started`` is set; then ``aib gc`` (the Python API).
    Returns the run directory."""
    config_of(settings)
    file = tmp_path / "template.json"
    file.write_text(json.dumps(tmpl))
    env = {**os.environ, "AIB_FAKE_CAPTURE_BYTES": str(CAPTURE), "AIB_FAKE_ARM_TOKEN": "test"}
    cmd = [sys.executable, "-m", "aib_sdk.testing.crash_runner", str(file), *PROVIDERS]
    async with await anyio.open_process(cmd, env=env, stderr=subprocess.DEVNULL) as proc:
        with anyio.fail_after(60):
            await until(started)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    config = Config.load(None)
    options = BuildOptions(config=config, credential=CREDENTIAL)
    [collected] = await collect_garbage(config, plugins(), options=options)
    assert collected.ok, collected.lines()
    return collected.run_directory


async def record_of(run_directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await anyio.Path(run_directory / "run.json").read_text())
    return data


async def only_run() -> Path:
    [run] = await list_runs(Config.load(None))
    return run.run_directory


def holding(predicate: Callable[[Seen], bool], started: anyio.Event) -> Callable[[Seen], Any]:
    async def gate(seen: Seen) -> int | str | None:
        if predicate(seen):
            started.set()
            await anyio.sleep_forever()
        return None

    return gate


def failing(predicate: Callable[[Seen], bool], verdict: int | str = 503) -> Callable[[Seen], Any]:
    async def gate(seen: Seen) -> int | str | None:
        return verdict if predicate(seen) else None

    return gate


async def check(run_dir: Path, state: str, *texts: str) -> dict[str, Any]:
    status = (await record_of(run_dir))["lastRunStatus"]
    assert status["runState"] == state, status
    for text in texts:
        assert text in status["message"], status
    assert leftovers(run_dir) == []
    return status


# S3 ------------------------------------------------------------------------------------------------------------


async def s3_buckets(url: str, *regions: str) -> list[str]:
    import aioboto3

    names = []
    for region in regions:
        name = f"aib-{region}-{os.urandom(4).hex()}"
        async with aioboto3.Session().client("s3", region_name=region, endpoint_url=url) as s3:
            args = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            await s3.create_bucket(Bucket=name, **args)
        names.append(name)
    return names


async def s3_state(url: str, bucket: str, region: str) -> tuple[list[str], list[str]]:
    """(open multipart uploads, object keys) of a bucket."""
    import aioboto3

    async with aioboto3.Session().client("s3", region_name=region, endpoint_url=url) as s3:
        uploads = [u["Key"] for u in (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])]
        keys = [o["Key"] for o in (await s3.list_objects_v2(Bucket=bucket)).get("Contents", [])]
    return uploads, keys


def is_part(seen: Seen) -> bool:
    return seen.is_upload_part


def is_copy(seen: Seen) -> bool:
    return seen.is_copy


@asynccontextmanager
async def s3_target(moto_url: str, gate: Callable[[Seen], Any], replicate: bool) -> AsyncIterator[tuple[dict, list]]:
    """An S3Image target through the proxy: one region (upload) or two (the second filled by server-side copy)."""
    regions = ["eu-west-1", "us-west-2"] if replicate else ["eu-west-1"]
    buckets = await s3_buckets(moto_url, *regions)
    async with fault_proxy(moto_url, gate) as proxy:
        os.environ["AIB_TRUST_ENDPOINTS"] = proxy.url  # the operator allows the template's endpoint (trust rules)
        target = {
            "type": "S3Image",
            "runOutputName": "s3",
            "key": "img/disk.raw",
            "format": "raw",
            "regions": [
                {"bucket": b, "region": r, "endpointUrl": proxy.url} for b, r in zip(buckets, regions, strict=True)
            ],
        }
        try:
            yield target, list(zip(buckets, regions, strict=True))
        finally:
            del os.environ["AIB_TRUST_ENDPOINTS"]


async def assert_no_partial_s3(moto_url: str, places: list[tuple[str, str]], *, complete_first: bool) -> None:
    for index, (bucket, region) in enumerate(places):
        uploads, keys = await s3_state(moto_url, bucket, region)
        assert uploads == [], f"open multipart upload in {bucket}"
        if not (complete_first and index == 0):
            assert keys == [], f"object left in {bucket}"


@pytest.mark.parametrize("where", ["upload", "replication"])
async def test_s3_cancel(lab: dict[str, Any], moto_url: str, where: str) -> None:
    started = anyio.Event()
    replicate = where == "replication"
    async with s3_target(moto_url, holding(is_copy if replicate else is_part, started), replicate) as (target, places):
        result = await cancelled_build(lab, template([target]), started)
    assert result.run_state == "Canceled"
    await check(await only_run(), "Canceled", "canceled during Distributing")
    await assert_no_partial_s3(moto_url, places, complete_first=replicate)


@pytest.mark.parametrize("where", ["upload", "replication"])
async def test_s3_kill9(lab: dict[str, Any], moto_url: str, where: str, tmp_path: Path) -> None:
    started = anyio.Event()
    replicate = where == "replication"
    async with s3_target(moto_url, holding(is_copy if replicate else is_part, started), replicate) as (target, places):
        run_dir = await killed_build(lab, template([target]), started, tmp_path)
    await check(run_dir, "Failed", "interrupted during Distributing (distributing s3)")
    await assert_no_partial_s3(moto_url, places, complete_first=replicate)


@pytest.mark.parametrize("where", ["upload", "replication"])
async def test_s3_fault(lab: dict[str, Any], moto_url: str, where: str) -> None:
    replicate = where == "replication"
    async with s3_target(moto_url, failing(is_copy if replicate else is_part), replicate) as (target, places):
        result = await build(lab, template([target]))
    assert result.run_state == "Failed"
    region = "us-west-2" if replicate else "eu-west-1"
    await check(await only_run(), "Failed", "distribution failed for every target: s3", region, "HTTP 503")
    await assert_no_partial_s3(moto_url, places, complete_first=replicate)


# Azure -----------------------------------------------------------------------------------------------------------


def azure_settings(lab: dict[str, Any], azurite: Azurite, arm: ArmTestServer, proxy: FaultProxy) -> dict[str, Any]:
    storage = {n: {"blob_endpoint": f"{proxy.url}/{n}", "key": k} for n, k in azurite.accounts.items()}
    return {
        **lab,
        "azure": {
            "storage": storage,
            "arm_endpoint": arm.url,
            "staging_storage_account": "devstoreaccount1",
            "poll_interval": 0.05,
            "regions": {"eastus": "devstoreaccount1"},
        },
    }


async def blobs(azurite: Azurite, container: str) -> list[str]:
    import httpx

    from aib_provider_azure.blob import BlobService
    from aib_provider_azure.settings import AzureSettings

    account = AzureSettings.from_config(Config({"azure": azurite.config()}, {})).account("devstoreaccount1")
    async with httpx.AsyncClient() as client:
        response = await BlobService(client).request(
            "GET",
            account,
            f"{account.blob_endpoint}/{container}",
            what="list blobs",
            params={"restype": "container", "comp": "list"},
            ok=(200, 404),
        )
    return re.findall(r"<Name>(.*?)</Name>", response.text)


def is_page(seen: Seen) -> bool:
    return seen.method == "PUT" and "comp=page" in seen.target


def vhd_target(azurite: Azurite, proxy: FaultProxy, container: str) -> dict[str, Any]:
    return {"type": "VHD", "runOutputName": "vhd", "uri": f"{proxy.url}/devstoreaccount1/{container}/disk.vhd"}


def add_gallery(arm: ArmTestServer) -> None:
    arm.add(DEFINITION.rsplit("/images/", 1)[0], {"location": "eastus"})
    arm.add(DEFINITION, {"location": "eastus", "properties": {"osType": "Linux", "osState": "Generalized"}})


def sig_target() -> dict[str, Any]:
    return {"type": "SharedImage", "runOutputName": "sig", "galleryImageId": f"{DEFINITION}/versions/1.0.0"}


@pytest.mark.parametrize("mode", ["cancel", "kill9", "fault"])
async def test_azure_vhd_upload(
    lab: dict[str, Any], azurite: Azurite, arm: ArmTestServer, mode: str, tmp_path: Path
) -> None:
    started = anyio.Event()
    container = f"vhds{os.urandom(3).hex()}"
    gate = failing(is_page, "reset") if mode == "fault" else holding(is_page, started)
    async with fault_proxy(f"http://{azurite.host}:{azurite.port}", gate) as proxy:
        settings = azure_settings(lab, azurite, arm, proxy)
        tmpl = template([vhd_target(azurite, proxy, container)])
        if mode == "cancel":
            assert (await cancelled_build(settings, tmpl, started)).run_state == "Canceled"
            await check(await only_run(), "Canceled", "canceled during Distributing")
        elif mode == "kill9":
            run_dir = await killed_build(settings, tmpl, started, tmp_path)
            await check(run_dir, "Failed", "interrupted during Distributing (distributing vhd)")
        else:
            assert (await build(settings, tmpl)).run_state == "Failed"
            await check(await only_run(), "Failed", "distribution failed for every target: vhd")
    assert await blobs(azurite, container) == []  # no partial blob


@pytest.mark.parametrize("mode", ["cancel", "kill9", "fault"])
async def test_azure_gallery_replication(
    lab: dict[str, Any], azurite: Azurite, arm: ArmTestServer, mode: str, tmp_path: Path
) -> None:
    add_gallery(arm)
    started = anyio.Event()
    if mode == "fault":
        arm.state.fail_regions = {"westus"}
    else:
        arm.state.replication_polls = 100_000  # replication never ends: the cell hits it under way
    original = arm.handle

    def spy(method: str, target: str, headers: dict[str, str], raw: bytes) -> Any:
        if method == "GET" and "ReplicationStatus" in target:
            started.set()
        return original(method, target, headers, raw)

    arm.handle = spy  # type: ignore[method-assign]
    async with fault_proxy(f"http://{azurite.host}:{azurite.port}") as proxy:
        settings = azure_settings(lab, azurite, arm, proxy)
        tmpl = template([{**sig_target(), "targetRegions": [{"name": "eastus"}, {"name": "westus"}]}])
        if mode == "cancel":
            assert (await cancelled_build(settings, tmpl, started)).run_state == "Canceled"
            await check(await only_run(), "Canceled", "canceled during Distributing")
        elif mode == "kill9":
            run_dir = await killed_build(settings, tmpl, started, tmp_path)
            await check(run_dir, "Failed", "interrupted during Distributing (distributing sig)")
        else:
            assert (await build(settings, tmpl)).run_state == "Failed"
            await check(await only_run(), "Failed", "replication of", "failed in region(s) westus")
    assert arm.resource(f"{DEFINITION}/versions/1.0.0") is None  # no half-written gallery version
    assert await blobs(azurite, "aib-staging") == []  # no staging blob


# Local targets: disk full ----------------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: smaller than the 4 MiB captured disk (ENOSPC while writing it)."""
    mount = tmp_path / "tiny-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_disk_file_fault_disk_full(lab: dict[str, Any], tiny_disk: Path) -> None:
    out = tiny_disk / "out.raw"
    tmpl = template([{"type": "DiskFile", "runOutputName": "disk", "uri": out.as_uri(), "format": "raw"}])
    assert (await build(lab, tmpl)).run_state == "Failed"
    await check(await only_run(), "Failed", "distribution failed for every target: disk")
    assert list(tiny_disk.iterdir()) == []  # no partial output


async def test_local_gallery_replication_fault_disk_full(lab: dict[str, Any], tiny_disk: Path, tmp_path: Path) -> None:
    from aib_provider_local_gallery.ids import GalleryImageRef, GalleryRef
    from aib_provider_local_gallery.manifest import DefinitionRecord
    from aib_provider_local_gallery.settings import GallerySettings
    from aib_provider_local_gallery.store import GalleryStore

    lab["local-gallery"] = {"root": str(tmp_path / "gallery"), "regions": {"full": str(tiny_disk)}}
    store = GalleryStore(GallerySettings.from_config(config_of(lab)))
    store.create_gallery(GalleryRef("rg", "gal"))
    definition = "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/galleries/gal/images/linux"
    store.create_definition(
        DefinitionRecord(
            id=definition,
            name="linux",
            gallery="gal",
            resource_group="rg",
            location="local",
            publisher="a",
            offer="b",
            sku="c",
        )
    )
    target = {
        "type": "SharedImage",
        "runOutputName": "gallery",
        "galleryImageId": f"{definition}/versions/1.0.0",
        "targetRegions": [{"name": "local"}, {"name": "full"}],
    }
    assert (await build(lab, template([target]))).run_state == "Failed"
    await check(await only_run(), "Failed", "distribution failed for every target: gallery", "full")
    assert not store.path_of(GalleryImageRef("rg", "gal", "linux", "1.0.0")).exists()
    assert [p for p in tiny_disk.rglob("*") if p.is_file()] == []  # no half-written version in any region


# Fetch -----------------------------------------------------------------------------------------------------------


@asynccontextmanager
async def file_server(behaviour: str, started: anyio.Event) -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 serving a script: ``hang`` (sends half, then holds), ``503`` or ``reset``."""

    async def handle(client: Any) -> None:
        async with client:
            await client.receive(65536)
            started.set()
            if behaviour == "503":
                await client.send(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            elif behaviour == "hang":
                await client.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"#" * 1000)
                await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        try:
            yield f"http://127.0.0.1:{port}/setup.sh"
        finally:
            tg.cancel_scope.cancel()


def fetch_template(uri: str) -> dict[str, Any]:
    step = {"type": "Shell", "name": "setup", "scriptUri": uri}
    return template([{"type": "VHD", "runOutputName": "vhd"}], [step])


@pytest.mark.parametrize("mode", ["cancel", "kill9", "fault-503", "fault-reset"])
async def test_fetch(lab: dict[str, Any], mode: str, tmp_path: Path) -> None:
    started = anyio.Event()
    behaviour = mode.removeprefix("fault-") if mode.startswith("fault") else "hang"
    async with file_server(behaviour, started) as uri:
        if mode == "cancel":
            assert (await cancelled_build(lab, fetch_template(uri), started)).run_state == "Canceled"
            # Inputs are fetched before the build VM boots (the step cache keys them), so the fetch is part of Building.
            await check(await only_run(), "Canceled", "canceled during Building (fetching the steps' inputs")
        elif mode == "kill9":
            run_dir = await killed_build(lab, fetch_template(uri), started, tmp_path)
            await check(run_dir, "Failed", "interrupted during Building")
        else:
            result = await build(lab, fetch_template(uri))
            assert result.run_state == "Failed"
            await check(await only_run(), "Failed", "customization failed: step 'setup'", "setup.sh")
    staging = (await only_run()).parent.parent
    assert not list((staging / "inputs").rglob(".partial-*"))  # no partial download
