"""Azure provider fixtures: a real Azurite (session), the ARM test server, run contexts and small disks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aib_provider_azure.testing.arm_server import ArmState, ArmTestServer, run_arm_server
from aib_provider_azure.testing.azurite import DEV_ACCOUNT, SECOND_ACCOUNT, Azurite, run_azurite
from aib_provider_azure.testing.files import MIB, write_sparse
from aib_sdk.artifacts import Artifact
from aib_sdk.config import Config
from aib_sdk.context import RunContext, Staging
from aib_sdk.events import Event
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager

TOKEN = "test-token-not-a-secret"


class NoFetcher:
    """Publishing fetches nothing; any call is a test failure."""

    async def fetch(self, uri: str, sha256: str | None = None, *, label: str | None = None) -> Path:
        raise AssertionError(f"unexpected fetch of {uri}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite's blob service on 127.0.0.1 with accounts devstoreaccount1 and aibreplica2."""
    with run_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture
def arm() -> Iterator[ArmTestServer]:
    """The ARM test server (a test server, not Azure), requiring the test bearer token, answering polls at once."""
    with run_arm_server(ArmState(token=TOKEN, retry_after=0)) as server:
        yield server


@pytest.fixture
def azure_config(azurite: Azurite, arm: ArmTestServer) -> dict[str, Any]:
    """An ``[azure]`` table pointing at Azurite and the ARM test server."""
    return {
        **azurite.config(),
        "arm_endpoint": arm.url,
        "staging_storage_account": DEV_ACCOUNT,
        "poll_interval": 0.05,
        "regions": {"eastus": DEV_ACCOUNT, "westus": SECOND_ACCOUNT},
    }


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def make_ctx(tmp_path: Path, events: list[Event]) -> Callable[..., RunContext]:
    """``make_ctx(azure_table, **build_options)`` → a real RunContext whose events land in ``events``."""
    from aib_provider_azure import StaticTokenCredential

    counter = iter(range(1_000_000))

    def make(azure: dict[str, Any], *, run_id: str | None = None, **options: Any) -> RunContext:
        rid = run_id or f"20261125T000000Z-{next(counter):06x}"
        return RunContext(
            run_id=rid,
            template_name="azure-test",
            template_digest="0" * 64,
            staging=Staging(tmp_path / "staging", rid),
            config=Config({"azure": azure}, {}),
            options=BuildOptions(credential=StaticTokenCredential(TOKEN), **options),
            emit=events.append,
            fetcher=NoFetcher(),
            plugins=PluginManager(entry_points=False),
        )

    return make


@pytest.fixture
def small_artifact(tmp_path: Path) -> Artifact:
    """An 8 MiB raw disk (not MiB-aligned at the end) with data at 1 MiB and near its end."""
    path = write_sparse(tmp_path / "small.raw", 8 * MIB + 4096, {MIB: os.urandom(300_000), 8 * MIB: b"end!" * 1024})
    return Artifact(path=path, format="raw", virtual_size=8 * MIB + 4096, os_type="Linux", hyper_v_generation="V2")
