"""Page blob uploads, cleanup and Copy Blob replication against a real Azurite."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import anyio
import httpx
import pytest

from aib_provider_azure.blob import BlobService
from aib_provider_azure.distributors.vhd import AzureVhd
from aib_provider_azure.ranges import CHUNK
from aib_provider_azure.replicate import copy_to_region, replicate
from aib_provider_azure.settings import AzureSettings, BlobRef
from aib_provider_azure.testing.files import MIB, write_sparse
from aib_provider_azure.upload import upload_page_blob
from aib_sdk import disks
from aib_sdk.artifacts import Artifact
from aib_sdk.config import Config
from aib_sdk.errors import ConflictError, DistributeError
from aib_sdk.events import Progress, TargetStatus
from aib_sdk.models.specs import VhdDistributor

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


def settings_for(azurite, **extra) -> AzureSettings:
    return AzureSettings.from_config(Config({"azure": {**azurite.config(), **extra}}, {}))


def blob_at(azurite, settings: AzureSettings, name: str, account: str = "devstoreaccount1") -> BlobRef:
    ref = settings.parse_blob_uri(f"{azurite.endpoint(account)}/vhds/{name}")
    assert ref is not None
    return ref


async def download(service: BlobService, blob: BlobRef, size: int) -> bytes:
    parts = []
    for offset in range(0, size, 16 * MIB):
        parts.append(await service.read(blob, offset, min(16 * MIB, size - offset)))
    return b"".join(parts)


@pytest.fixture
def vhd_96(tmp_path: Path) -> Path:
    """A 96 MiB + 512 byte 'fixed VHD' shaped file: data in three places, a footer, holes elsewhere."""
    size = 96 * MIB + 512
    data = {0: os.urandom(64 * 1024), 37 * MIB + 4096: os.urandom(2 * MIB), 95 * MIB: os.urandom(MIB)}
    data[96 * MIB] = b"conectix" + os.urandom(504)
    return write_sparse(tmp_path / "disk.vhd", size, data)


async def test_sparse_upload_skips_empty_ranges_and_content_matches(azurite, vhd_96: Path) -> None:
    settings = settings_for(azurite)
    blob = blob_at(azurite, settings, "sparse/disk.vhd")
    async with httpx.AsyncClient() as client:
        service = BlobService(client)
        stats = await upload_page_blob(service, vhd_96, blob, metadata={"aibrunid": "r1"}, concurrency=4)
        size = vhd_96.stat().st_size
        assert stats.total_ranges == -(-size // CHUNK) == 25
        # data sits in ranges 0, 9 (37 MiB + 4 KiB .. 39 MiB + 4 KiB spans 9), 23 and the footer range 24
        assert service.calls["put page"] == stats.written_ranges < stats.total_ranges
        assert stats.written_ranges <= 6
        assert await download(service, blob, size) == vhd_96.read_bytes()
        props = await service.properties(blob)
        assert props is not None
        assert props["x-ms-meta-aibcomplete"] == "true"
        assert props["x-ms-meta-aibsha256"] == hashlib.sha256(vhd_96.read_bytes()).hexdigest()
        assert props["x-ms-meta-aibrunid"] == "r1"
        assert int(props["content-length"]) == size
        written = await service.page_ranges(blob)
        assert sum(end - start + 1 for start, end in written) == stats.bytes_written
        await service.delete(blob)


async def test_content_check_skips_zero_ranges_of_a_dense_file(azurite, tmp_path: Path) -> None:
    """Without holes (a fully allocated file) all-zero ranges are still skipped by checking their content."""
    path = tmp_path / "dense.vhd"
    payload = os.urandom(4096)
    path.write_bytes(bytes(6 * MIB) + payload + bytes(6 * MIB - 4096) + b"\x01" * 512)
    settings = settings_for(azurite)
    blob = blob_at(azurite, settings, "dense/disk.vhd")
    async with httpx.AsyncClient() as client:
        service = BlobService(client)
        stats = await upload_page_blob(service, path, blob, sha256="0" * 64)
        assert (stats.total_ranges, stats.written_ranges) == (4, 2)
        assert await download(service, blob, path.stat().st_size) == path.read_bytes()
        await service.delete(blob)


class CorruptingService(BlobService):
    """Aims the third Put Page past the blob's end: Azurite itself rejects it."""

    async def put_page(self, blob: BlobRef, offset: int, data: bytes, *, md5: str | None = None) -> None:
        if self.calls.get("put page", 0) == 2:
            offset = 1024 * MIB
        await super().put_page(blob, offset, data, md5=md5)


async def test_failure_mid_upload_leaves_no_blob(azurite, vhd_96: Path) -> None:
    settings = settings_for(azurite)
    blob = blob_at(azurite, settings, "fail/disk.vhd")
    async with httpx.AsyncClient() as client:
        service = CorruptingService(client)
        with pytest.raises(DistributeError, match="put page"):
            await upload_page_blob(service, vhd_96, blob, concurrency=1)
        assert service.calls["put page"] >= 3
        assert await service.properties(blob) is None


class SlowService(BlobService):
    """Signals after each Put Page so the test can cancel while the upload is half done."""

    def __init__(self, client: httpx.AsyncClient, written: anyio.Event) -> None:
        super().__init__(client)
        self.written = written

    async def put_page(self, blob: BlobRef, offset: int, data: bytes, *, md5: str | None = None) -> None:
        await super().put_page(blob, offset, data, md5=md5)
        if self.calls["put page"] >= 2:
            self.written.set()


async def test_cancelled_upload_leaves_no_blob(azurite, vhd_96: Path) -> None:
    settings = settings_for(azurite)
    blob = blob_at(azurite, settings, "cancel/disk.vhd")
    async with httpx.AsyncClient() as client:
        written = anyio.Event()
        service = SlowService(client, written)
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await upload_page_blob(service, vhd_96, blob, concurrency=1)
                raise AssertionError("the upload should have been cancelled")

            tg.start_soon(run)
            await written.wait()
            assert await BlobService(client).properties(blob) is not None  # it was there, half written
            tg.cancel_scope.cancel()
        assert await BlobService(client).properties(blob) is None


class LostAnswerService(BlobService):
    """The create request (Put Blob, or Copy Blob) reaches Azurite but its answer never comes back."""

    def __init__(self, client: httpx.AsyncClient, sent: anyio.Event) -> None:
        super().__init__(client)
        self.sent = sent

    async def create_page_blob(self, blob: BlobRef, size: int, metadata: Mapping[str, str]) -> None:
        await super().create_page_blob(blob, size, metadata)
        self.sent.set()
        await anyio.sleep_forever()

    async def start_copy(self, dest: BlobRef, source_url: str, metadata: Mapping[str, str]) -> httpx.Headers:
        await super().start_copy(dest, source_url, metadata)
        self.sent.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_upload_cancelled_while_its_create_is_unanswered_leaves_no_blob(azurite, vhd_96: Path) -> None:
    settings = settings_for(azurite)
    blob = blob_at(azurite, settings, "lost-answer/disk.vhd")
    async with httpx.AsyncClient() as client:
        sent = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(upload_page_blob, LostAnswerService(client, sent), vhd_96, blob)
            await sent.wait()
            assert await BlobService(client).properties(blob) is not None  # the create took effect
            tg.cancel_scope.cancel()
        assert await BlobService(client).properties(blob) is None


async def test_copy_cancelled_while_its_create_is_unanswered_leaves_no_blob(azurite, tmp_path: Path) -> None:
    settings = settings_for(azurite)
    source = blob_at(azurite, settings, "lost-copy/source.vhd")
    dest = blob_at(azurite, settings, "lost-copy/dest.vhd")
    async with httpx.AsyncClient() as client:
        await upload_page_blob(BlobService(client), write_sparse(tmp_path / "s.vhd", MIB, {0: b"x" * 512}), source)
        sent = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                functools.partial(copy_to_region, LostAnswerService(client, sent), source, dest, {}, region="west")
            )
            await sent.wait()
            assert await BlobService(client).properties(dest) is not None
            tg.cancel_scope.cancel()
        assert await BlobService(client).properties(dest) is None
        assert await BlobService(client).properties(source) is not None  # only what the copy created is removed


async def test_existing_blob_is_not_overwritten(azurite, tmp_path: Path) -> None:
    path = write_sparse(tmp_path / "a.vhd", MIB + 512, {0: b"x" * 512})
    settings = settings_for(azurite)
    blob = blob_at(azurite, settings, "exists/disk.vhd")
    async with httpx.AsyncClient() as client:
        service = BlobService(client)
        await upload_page_blob(service, path, blob)
        with pytest.raises(ConflictError, match="already exists"):
            await upload_page_blob(service, path, blob)
        props = await service.properties(blob)
        assert props is not None and props["x-ms-meta-aibcomplete"] == "true"  # the first upload is intact
        await service.delete(blob)


async def test_wrong_key_is_rejected_by_azurite(azurite, tmp_path: Path) -> None:
    bad = {
        "storage": {"devstoreaccount1": {"blob_endpoint": azurite.endpoint("devstoreaccount1"), "key": "d3Jvbmcta2V5"}}
    }
    settings = AzureSettings.from_config(Config({"azure": bad}, {}))
    blob = blob_at(azurite, settings, "denied/disk.vhd")
    path = write_sparse(tmp_path / "a.vhd", MIB + 512, {0: b"x" * 512})
    async with httpx.AsyncClient() as client:
        with pytest.raises(DistributeError, match="403"):
            await upload_page_blob(BlobService(client), path, blob)


async def test_replication_copies_to_other_accounts_and_names_failed_regions(azurite, tmp_path: Path) -> None:
    path = write_sparse(tmp_path / "r.vhd", 9 * MIB + 512, {2 * MIB: os.urandom(MIB), 9 * MIB: b"f" * 512})
    config = azurite.config()
    config["storage"]["missingacct"] = {"blob_endpoint": azurite.endpoint("missingacct"), "key": "bWlzc2luZw=="}
    config["regions"] = {"eastus": "devstoreaccount1", "westus": "aibreplica2", "northeurope": "missingacct"}
    settings = AzureSettings.from_config(Config({"azure": config}, {}))
    blob = blob_at(azurite, settings, "repl/disk.vhd")
    states: list[tuple[str, str]] = []
    async with httpx.AsyncClient() as client:
        service = BlobService(client)
        await upload_page_blob(service, path, blob, metadata={"aibrunid": "r2"})
        result = await replicate(
            service,
            settings,
            blob,
            ["eastus", "westus", "northeurope"],
            {"aibrunid": "r2"},
            poll_interval=0.05,
            on_state=lambda r, s, m: states.append((r, s)),
        )
        assert set(result.uris) == {"eastus", "westus"}
        assert result.uris["eastus"] == blob.url
        assert result.uris["westus"] == f"{azurite.endpoint('aibreplica2')}/vhds/repl/disk.vhd"
        assert list(result.failures) == ["northeurope"]
        replica = blob.with_account(settings.account("aibreplica2"))
        assert await download(service, replica, path.stat().st_size) == path.read_bytes()
        props = await service.properties(replica)
        assert props is not None and props["x-ms-meta-aibcomplete"] == "true"
        assert ("westus", "Succeeded") in states and ("northeurope", "Failed") in states
        await service.delete(replica)
        await service.delete(blob)


async def test_vhd_distributor_routes_and_publishes(azurite, make_ctx, events, small_artifact: Artifact) -> None:
    azure = {
        **azurite.config(),
        "vhd_replication_regions": ["westus"],
        "poll_interval": 0.05,
        "regions": {"westus": "aibreplica2"},
    }
    uri = f"{azurite.endpoint('devstoreaccount1')}/images/out/small.vhd"
    tags = {"team": "infra", "cost-center": "42"}
    spec = VhdDistributor.model_validate({"type": "VHD", "runOutputName": "vhdOut", "uri": uri, "artifactTags": tags})
    config = Config({"azure": azure}, {})
    assert AzureVhd.claims(spec, config)
    assert not AzureVhd.claims(
        VhdDistributor.model_validate({"type": "VHD", "runOutputName": "x", "uri": "file:///tmp/x.vhd"}), config
    )
    assert AzureVhd.claims(
        VhdDistributor.model_validate(
            {"type": "VHD", "runOutputName": "x", "uri": "https://acct01.blob.core.windows.net/c/x.vhd"}
        ),
        Config({}, {}),
    )
    ctx = make_ctx(azure)
    output = await AzureVhd().publish(small_artifact, spec, ctx)
    assert output.artifact_uri == uri and "?" not in uri
    assert output.regions["westus"] == f"{azurite.endpoint('aibreplica2')}/images/out/small.vhd"
    vhd = await disks.converted(small_artifact, "vhd", ctx)
    settings = AzureSettings.from_config(config)
    async with httpx.AsyncClient() as client:
        service = BlobService(client)
        for ref_uri in (uri, output.regions["westus"]):
            ref = settings.parse_blob_uri(ref_uri)
            assert ref is not None
            assert await download(service, ref, vhd.stat().st_size) == vhd.read_bytes()
            headers = await service.properties(ref)
            assert headers is not None  # artifactTags ride on the blob (and its replicas) as metadata
            assert headers["x-ms-meta-team"] == "infra" and headers["x-ms-meta-cost_center"] == "42"
            await service.delete(ref)
    uploads = [e for e in events if isinstance(e, Progress) and e.task == "upload"]
    assert uploads and uploads[-1].done == uploads[-1].total == vhd.stat().st_size
    assert uploads[-1].target == "vhdOut"
    regions = [(e.region, e.state) for e in events if isinstance(e, TargetStatus)]
    assert regions == [("westus", "Running"), ("westus", "Succeeded")]
