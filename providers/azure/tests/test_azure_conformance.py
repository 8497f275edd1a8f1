"""The Azure VHD distributor passes the provider conformance suite, against Azurite on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from aib_provider_azure.blob import BlobService
from aib_provider_azure.distributors.vhd import AzureVhd
from aib_provider_azure.settings import AzureSettings
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.testing.conformance import DistributorConformance


class TestAzureVhd(DistributorConformance):
    distributor = AzureVhd

    @pytest.fixture(autouse=True)
    def _azurite(self, azurite: Any, make_ctx: Callable[..., RunContext]) -> None:
        self.azure = {**azurite.config(), "poll_interval": 0.05}
        self.endpoint = azurite.endpoint("devstoreaccount1")
        self.make_ctx = make_ctx

    def context(self, tmp_path: Path) -> RunContext:
        return self.make_ctx(self.azure)

    def uri(self, where: Path) -> str:
        return f"{self.endpoint}/conformance/{where.parent.name}-{where.name}/image.vhd"

    def target(self, where: Path) -> dict[str, Any]:
        return {"type": "VHD", "uri": self.uri(where), "runOutputName": "vhd"}

    async def published(self, where: Path) -> list[str]:
        ref = AzureSettings.from_config(Config({"azure": self.azure}, {})).parse_blob_uri(self.uri(where))
        assert ref is not None
        async with httpx.AsyncClient() as client:
            found = await BlobService(client).properties(ref)
        return [self.uri(where)] if found is not None else []
