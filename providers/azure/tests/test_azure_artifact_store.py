"""The ``az://`` artifact store of the Temporal engine against Azurite: content-addressed block blobs (committed
whole with one block list, sha256 in the metadata), verified downloads, tampering caught on the reader."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from aib_provider_azure import artifact_store as az_store
from aib_provider_azure import hooks
from aib_provider_azure.settings import AzureSettings
from aib_provider_azure.testing.azurite import DEV_ACCOUNT, Azurite
from aib_sdk.artifact_store import open_artifact_store
from aib_sdk.config import Config
from aib_sdk.errors import FetchError, UsageError
from aib_sdk.plugins.manager import PluginManager

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


def _store(azurite: Azurite, location: str):
    config = Config({"azure": azurite.config()}, env={})
    return open_artifact_store(location, PluginManager(entry_points=False, plugins=[hooks]), config)


async def _blob_names(azurite: Azurite, container: str) -> list[str]:
    from aib_provider_azure.sharedkey import SharedKeyAuth

    account = AzureSettings.from_config(Config({"azure": azurite.config()}, env={})).account(DEV_ACCOUNT)
    assert account.key is not None
    async with httpx.AsyncClient(auth=SharedKeyAuth(account.name, account.key)) as client:
        response = await client.get(
            f"{account.blob_endpoint}/{container}",
            params={"restype": "container", "comp": "list", "include": "uncommittedblobs"},
            headers={"x-ms-version": "2021-08-06"},
        )
    import re

    return sorted(re.findall(r"<Name>(.*?)</Name>", response.text))


async def test_round_trip_blocks_and_tamper(azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(az_store, "BLOCK", 1 * MiB)  # several blocks without a big file
    store = _store(azurite, f"az://{DEV_ACCOUNT}/aib-inputs/team-a")
    small, big = tmp_path / "setup.sh", tmp_path / "disk.raw"
    small.write_text("echo hi\n")
    big.write_bytes(os.urandom(3 * MiB + 77))
    # the container is the operator's (like the bucket): create it as they would
    backend = store.backend
    from aib_provider_azure.session import AzureSession

    async with AzureSession(backend.settings) as session:  # type: ignore[attr-defined]
        await session.blob.ensure_container(backend.account, "aib-inputs")  # type: ignore[attr-defined]

    digest, size = await store.put(small)
    assert (digest, size) == (hashlib.sha256(b"echo hi\n").hexdigest(), 8)
    big_digest, _ = await store.put(big)
    assert await _blob_names(azurite, "aib-inputs") == sorted(
        [f"team-a/sha256/{digest}", f"team-a/sha256/{big_digest}"]
    )
    copy = await store.get(big_digest, tmp_path / "worker" / "disk.raw", what="input disk.raw")
    assert copy.read_bytes() == big.read_bytes()
    assert await store.put(small) == (digest, size)

    async with AzureSession(backend.settings) as session:  # type: ignore[attr-defined]
        ref = backend._where(f"sha256/{digest}")  # type: ignore[attr-defined]
        await session.blob.put_block_blob(ref, b"echo evil\n", {"sha256": digest})  # tampered, metadata kept
    with pytest.raises(FetchError, match="does not match its digest"):
        await store.get(digest, tmp_path / "worker" / "setup.sh", what="input setup.sh")
    assert [p.name for p in (tmp_path / "worker").iterdir()] == ["disk.raw"]
    with pytest.raises(FetchError, match="missing from the artifact store"):
        await store.get("0" * 64, tmp_path / "worker" / "x", what="input x")


async def test_bad_locations_and_a_missing_container(azurite: Azurite, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="expected az://"):
        _store(azurite, f"az://{DEV_ACCOUNT}")
    with pytest.raises(UsageError, match="artifact_store"):
        _store(azurite, f"az://{DEV_ACCOUNT}/Bad_Container")
    (tmp_path / "a").write_text("a")
    with pytest.raises(UsageError, match="ContainerNotFound"):
        await _store(azurite, f"az://{DEV_ACCOUNT}/no-such-container").put(tmp_path / "a")
