"""Azure provider fixtures: a real Azurite (session), the ARM test server, run contexts and small disks, and what
the VM tests share: a gallery in the ARM test server, the staged VHD behind each version PUT, Builder options."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from aib_provider_azure import StaticTokenCredential
from aib_provider_azure.settings import AzureSettings
from aib_provider_azure.sharedkey import SharedKeyAuth
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


@pytest.fixture
def add_gallery(arm: ArmTestServer) -> Callable[[str], None]:
    """``add_gallery(definition_id)`` puts a gallery and a Linux, generalized image definition (``…/galleries/<g>/
    images/<d>``) in eastus into the ARM test server."""

    def add(definition_id: str, location: str = "eastus") -> None:
        arm.add(definition_id.rsplit("/images/", 1)[0], {"location": location})
        arm.add(definition_id, {"location": location, "properties": {"osType": "Linux", "osState": "Generalized"}})

    return add


@dataclass
class VersionPuts:
    """The gallery version PUTs the ARM test server received, and the staged VHD of the last one (``vhd``)."""

    vhd: Path
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def is_fixed_vhd(self) -> bool:
        """Whether the staged file is a whole number of MiB followed by a VHD footer, as Azure requires."""
        size = self.vhd.stat().st_size
        with open(self.vhd, "rb") as f:
            f.seek(size - 512)
            footer = f.read()
        return footer.startswith(b"conectix") and (size - 512) % MIB == 0


@pytest.fixture
def version_puts(arm: ArmTestServer, azure_config: dict[str, Any], tmp_path: Path) -> VersionPuts:
    """Records each gallery version PUT and reads the VHD it names back from Azurite, which must be complete.

    The VHD is read while ARM is being asked to publish it: the provider deletes the staging blob afterwards.
    """
    settings = AzureSettings.from_config(Config({"azure": azure_config}, {}))
    puts = VersionPuts(tmp_path / "staged.vhd")
    original = arm.handle

    def handle(method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], Any]:
        if method == "PUT" and "/versions/" in target:
            body = json.loads(raw)
            puts.bodies.append(body)
            uri = body["properties"]["storageProfile"]["osDiskImage"]["source"]["uri"]
            ref = settings.parse_blob_uri(uri)
            assert ref is not None, uri
            with httpx.stream("GET", uri, auth=SharedKeyAuth(ref.account.name, ref.account.key)) as response:
                response.raise_for_status()
                with open(puts.vhd, "wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
                assert response.headers.get("x-ms-meta-aibcomplete") == "true"
        return original(method, target, headers, raw)

    arm.handle = handle  # type: ignore[method-assign]
    return puts


@pytest.fixture
def vm_build_options(azure_config: dict[str, Any], tmp_path: Path, tiny_guest_source: Any, tiny_guest_cache: Path):
    """``vm_build_options(template_name, recorder, **options)`` → BuildOptions for a qemu build of the tiny guest
    that publishes through this provider to Azurite and the ARM test server."""
    from aib_provider_azure import hooks as azure_hooks
    from aib_provider_qemu import hooks as qemu_hooks  # the test suite installs every provider

    def make(template_name: str, recorder: Callable[[Event], None], **options: Any) -> BuildOptions:
        env = dict(os.environ, AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(tiny_guest_cache))
        return BuildOptions(
            source=tiny_guest_source,
            config=Config({"azure": azure_config}, env),
            plugins=PluginManager(entry_points=False, plugins=[qemu_hooks, azure_hooks]),
            build_host="qemu",
            credential=StaticTokenCredential(TOKEN),
            on_event=recorder,
            timeout=900,
            template_name=template_name,
            **options,
        )

    return make
