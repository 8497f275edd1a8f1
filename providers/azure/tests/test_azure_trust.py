"""Credentials only to configured endpoints: an Azure blob URI in a template gets a storage token or Shared Key only
if its host is Azure's own (``<account>.blob.core.windows.net`` and the other clouds' suffixes) or the operator
configured it (``[azure.storage.<account>] blob_endpoint``, ``[trust] endpoints``).

Attack: a ``VHD`` target ``https://victim.blob.attacker.example/…`` — before, it was routed to the azure provider
(``<account>.blob.<anything>``) and sent a bearer token. After: the plan is refused, naming the host and the setting,
before anything runs; the configured Azurite account and public hosts still route to azure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aib_provider_azure.distributors.vhd import AzureVhd
from aib_provider_azure.testing.azurite import DEV_ACCOUNT
from aib_sdk.builder.plan import make_plan
from aib_sdk.config import Config
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.tiny_guest import SPEC
from aib_sdk.trust import EndpointRefused

pytestmark = pytest.mark.anyio


def _template(tmp_path: Path, uri: str) -> Path:
    doc = {"source": dict(SPEC), "distribute": [{"type": "VHD", "runOutputName": "vhd", "uri": uri}]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    return path


async def test_blob_host_the_operator_did_not_configure_is_refused(
    tmp_path: Path, azure_config: dict[str, Any], arm
) -> None:
    config = Config({"azure": azure_config}, {"HOME": str(tmp_path)})
    options = BuildOptions(config=config, plugins=PluginManager())
    before = len(arm.state.requests)
    for uri, host in [
        ("https://victim.blob.attacker.example/images/x.vhd", "victim.blob.attacker.example"),
        (
            f"https://{DEV_ACCOUNT}.blob.core.windows.net.attacker.example/c/x.vhd",
            "devstoreaccount1.blob.core.windows.net.attacker.example",
        ),
    ]:
        with pytest.raises(EndpointRefused, match=rf"refusing to send credentials to https://{host}") as caught:
            await make_plan(_template(tmp_path, uri), options)
        assert "blob_endpoint" in str(caught.value) and "[trust] endpoints" in str(caught.value)
    assert len(arm.state.requests) == before  # nothing was asked of Azure either


async def test_configured_and_public_blob_hosts_still_route_to_azure(
    tmp_path: Path, azure_config: dict[str, Any], azurite
) -> None:
    options = BuildOptions(config=Config({"azure": azure_config}, {"HOME": str(tmp_path)}), plugins=PluginManager())
    for uri in [
        f"{azurite.endpoint(DEV_ACCOUNT)}/images/x.vhd",  # Azurite over http: configured
        "https://acct.blob.core.windows.net/images/x.vhd",
        "https://acct.blob.core.usgovcloudapi.net/images/x.vhd",
        "https://acct.blob.core.chinacloudapi.cn/images/x.vhd",
    ]:
        plan = await make_plan(_template(tmp_path, uri), options)
        assert plan.targets[0].distributor is AzureVhd, uri
    # An operator's allow-list admits a private blob host.
    allowed = Config({"azure": azure_config, "trust": {"endpoints": ["https://victim.blob.private.example"]}}, {})
    plan = await make_plan(
        _template(tmp_path, "https://victim.blob.private.example/images/x.vhd"),
        BuildOptions(config=allowed, plugins=PluginManager()),
    )
    assert plan.targets[0].distributor is AzureVhd
