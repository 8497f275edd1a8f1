"""Routing from the plugin catalogue: only the asked implementations are imported, and every answer (the class
chosen, the order third-party before core, every error) is the full registry's. Real installed providers, a real
catalogue on disk (what a build imports is asserted in a fresh interpreter in ``tests/cli/test_cli_startup.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aib_sdk.config import Config
from aib_sdk.errors import UsageError
from aib_sdk.plugins import catalog
from aib_sdk.plugins.manager import PluginManager

SOURCES: list[dict[str, Any]] = [
    {"type": "DiskImage", "uri": "file:///images/base.qcow2"},
    {"type": "DiskImage", "uri": "https://example.test/base.qcow2", "sha256Checksum": "0" * 64},
    {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "latest"},
    {"type": "PlatformImage", "publisher": "aib", "offer": "tiny-test", "sku": "1", "version": "latest"},
    {"type": "PlatformImage", "publisher": "Canonical", "offer": "nothing-here", "sku": "x", "version": "latest"},
    {"type": "ManagedImage", "imageId": "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/images/i"},
    {"type": "ManagedImage", "imageId": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/images/i"},
    {
        "type": "SharedImageVersion",
        "imageVersionId": "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/d/"
        "versions/1.0.0",
    },
    {"type": "S3Image", "uri": "s3://bucket/disk.vhd"},
]
TARGETS: list[dict[str, Any]] = [
    {"type": "VHD", "runOutputName": "a"},
    {"type": "VHD", "runOutputName": "b", "uri": "file:///out/disk.vhd"},
    {"type": "VHD", "runOutputName": "c", "uri": "s3://bucket/disk.vhd"},
    {"type": "VHD", "runOutputName": "d", "uri": "https://account.blob.core.windows.net/c/disk.vhd"},
    {"type": "VHD", "runOutputName": "e", "uri": "ftp://nowhere/disk.vhd"},
    {"type": "DiskFile", "runOutputName": "f", "uri": "file:///out/disk.qcow2", "format": "qcow2"},
    {"type": "Folder", "runOutputName": "g", "path": "/out"},
    {
        "type": "ManagedImage",
        "runOutputName": "h",
        "imageId": "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/images/i",
        "location": "local",
    },
]


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PluginManager:
    """A manager of the installed plugins with its registry collected (which records the catalogue)."""
    monkeypatch.setenv("AIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AIB_DISABLE_PLUGINS", raising=False)
    full = PluginManager()
    full.registry  # noqa: B018 - collecting records the catalogue
    assert catalog.load(set()) is not None
    return full


def answer(call: Callable[[], Any]) -> Any:
    """What a routing call gives: the object chosen, or the error's text."""
    try:
        return call()
    except UsageError as exc:
        return f"UsageError: {exc}"


def routes(pm: PluginManager, config: Config) -> list[Any]:
    models = pm.spec_registry.spec_models
    out: list[Any] = []
    for data in SOURCES:
        spec = models["source"][data["type"]].model_validate(data)
        out.append(answer(lambda spec=spec: pm.source_for(spec, config)))
    for data in TARGETS:
        spec = models["distributor"][data["type"]].model_validate(data)
        out.append(answer(lambda spec=spec: pm.distributor_for(spec, config)))
    for step in ("Shell", "File", "PowerShell", "Motd", "Deprovision", "NoSuchStep"):
        out.append(answer(lambda step=step: pm.customizer(step)))
    for comm in ("ssh", "winrm", "telnet"):
        out.append(answer(lambda comm=comm: pm.communicator(comm)))
    for host in (None, "qemu", "nope"):
        out.append(answer(lambda host=host: pm.build_host(host, config)))
    out.append(pm.hidden_customizers())
    out += [pm.releaser(kind) for kind in ("file", "qemu.vm", "azure.blob", "s3.object", "no.such.kind")]
    return out


def test_catalogue_routing_answers_as_the_full_registry(
    installed: PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Config.load()
    expected = routes(installed, config)
    assert any(isinstance(a, str) and a.startswith("UsageError") for a in expected)  # errors are compared too

    def no_collecting(self: PluginManager) -> Any:
        raise AssertionError("routing from the catalogue collected every plugin")

    monkeypatch.setattr(PluginManager, "_collect", no_collecting)
    assert routes(PluginManager(), config) == expected


def test_a_recorded_implementation_that_is_gone_means_the_full_registry(installed: PluginManager) -> None:
    file = catalog.cache_file()
    data = json.loads(file.read_text())
    rows = data["implementations"]["source"]
    for row in rows:
        row[1] = "no_such_module_anywhere:Gone" if row[0] == "DiskImage" else row[1]
    file.write_text(json.dumps(data))
    config = Config.load()
    spec = installed.spec_registry.spec_models["source"]["DiskImage"].model_validate(SOURCES[0])
    assert PluginManager().source_for(spec, config) is installed.source_for(spec, config)
    recorded = catalog.load(set())  # collecting wrote the catalogue again, with the class where it is now
    assert recorded is not None and recorded.implementations is not None
    assert "no_such_module_anywhere:Gone" not in {row.ref for row in recorded.implementations["source"]}
