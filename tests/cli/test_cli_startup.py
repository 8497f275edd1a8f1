"""The quick commands load what they need only: no provider SDK, and with a current plugin catalogue no provider
implementation and no event loop; ``aib build`` imports only the providers its template routes to. Asserted on
``sys.modules`` of a real ``aib`` run in a fresh interpreter (what is imported is behaviour; how long it takes is
measured in ``benchmarks/bench_cli_startup.py`` and ``benchmarks/bench_qemu_build.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aib_sdk.plugins import catalog
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fakes import fake_plugin

SDKS = ("asyncssh", "botocore", "boto3", "aioboto3", "aiobotocore", "azure", "cryptography")
IMPLEMENTATIONS = (
    "asyncio",
    "httpx",
    "rich",
    "aib_sdk.steps.linux",
    "aib_sdk.communicators.ssh",
    "aib_sdk.communicators.winrm.communicator",
    "aib_provider_qemu.host",
    "aib_provider_qemu.url_source",
    "aib_provider_local_gallery.store",
    "aib_provider_s3_vhd.transport",
    "aib_provider_azure.sources",
)
TEMPLATE = {
    "source": {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "latest"},
    "customize": [{"type": "Shell", "name": "hello", "inline": ["echo hello"]}],
    "distribute": [{"type": "VHD", "runOutputName": "out"}],
}
RUN = """
import json, sys
from aib_sdk.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = dict(os.environ)
    out.update(AIB_CACHE=str(tmp_path / "cache"), AIB_HOME=str(tmp_path / "home"))
    out["XDG_CONFIG_HOME"] = str(tmp_path / "no-config")
    for name in ("AIB_CONFIG", "AIB_DISABLE_PLUGINS"):
        out.pop(name, None)
    return out


def aib(env: dict[str, str], tmp_path: Path, *argv: str) -> tuple[int, set[str], str]:
    """Run ``aib ARGV`` in a new interpreter; its exit code, the modules it imported, and its stdout."""
    report = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(report), *argv], env=env, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(report.read_text())
    return data["code"], set(data["modules"]), proc.stdout


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if n in modules or any(m.startswith(n + ".") for m in modules))


def test_validate_imports_no_sdk_even_on_a_cold_cache(env: dict[str, str], tmp_path: Path) -> None:
    template = tmp_path / "one.json"
    template.write_text(json.dumps(TEMPLATE))
    code, modules, _ = aib(env, tmp_path, "validate", str(template))
    assert code == 0
    assert loaded(modules, SDKS) == []
    assert catalog.cache_file(env).is_file(), "the first run records the plugin catalogue"

    code, modules, _ = aib(env, tmp_path, "validate", str(template))
    assert code == 0
    assert loaded(modules, SDKS + IMPLEMENTATIONS) == []
    assert "aib_provider_qemu.specs" in modules  # DiskImage is a provider type: its model is loaded, nothing else


def test_catalogue_answers_as_the_full_registry(env: dict[str, str], tmp_path: Path) -> None:
    bad = dict(TEMPLATE, source={"type": "NoSuchSource"}, distribute=[{"type": "S3Image", "runOutputName": "x"}])
    template = tmp_path / "bad.json"
    template.write_text(json.dumps(bad))
    cold = [aib(env, tmp_path, *argv) for argv in (["plugins", "--json"], ["schema"], ["validate", str(template)])]
    assert catalog.cache_file(env).is_file()
    warm = [aib(env, tmp_path, *argv) for argv in (["plugins", "--json"], ["schema"], ["validate", str(template)])]
    for (cold_code, _, cold_out), (warm_code, modules, warm_out) in zip(cold, warm, strict=True):
        assert (warm_code, warm_out) == (cold_code, cold_out)
        assert loaded(modules, SDKS + IMPLEMENTATIONS) == []
    assert "pydantic" not in warm[0][1], "a listing from the catalogue needs no models"
    listing = json.loads(warm[0][2])
    assert "qemu" in listing["aib-provider-qemu"]["types"]["build-host"]
    assert 'unknown source type "NoSuchSource"' in warm[2][2] and "S3Image" in warm[1][2]


NOT_ASKED = (
    *SDKS,
    "aib_provider_azure",
    "aib_provider_local_gallery",
    "aib_provider_s3_vhd.source",
    "aib_provider_s3_vhd.distributors",
    "aib_provider_s3_vhd.transport",
    "aib_provider_qemu.debian",
    "aib_provider_qemu.catalogue",
    "aib_provider_qemu.tiny_source",
    "aib_sdk.communicators.winrm.communicator",  # a Linux guest needs no WinRM (nor its HTTP and SOAP stack)
    "httpx",
)


def test_a_local_qemu_build_imports_only_the_providers_it_routes_to(env: dict[str, str], tmp_path: Path) -> None:
    local = {
        "source": {"type": "DiskImage", "uri": (tmp_path / "missing.raw").as_uri(), "format": "raw"},
        "customize": [{"type": "Shell", "name": "hello", "inline": ["echo hello"]}],
        "distribute": [{"type": "DiskFile", "uri": (tmp_path / "out.qcow2").as_uri(), "runOutputName": "d"}],
    }
    template = tmp_path / "local.json"
    template.write_text(json.dumps(local))
    assert aib(env, tmp_path, "validate", str(template))[0] == 0  # records the plugin catalogue
    code, modules, out = aib(env, tmp_path, "build", str(template), "--json")
    assert code == 2 and "source disk not found" in out  # routed, run up to the source: no VM needed
    assert loaded(modules, NOT_ASKED) == []
    assert {"aib_provider_qemu.url_source", "aib_provider_qemu.host", "aib_sdk.steps.linux"} <= modules


def test_runs_loads_no_models(env: dict[str, str], tmp_path: Path) -> None:
    code, modules, _ = aib(env, tmp_path, "runs", "--json")
    assert code == 0
    assert loaded(modules, (*SDKS, "pydantic", "aib_sdk.events", "aib_provider_qemu")) == []


def test_a_stale_catalogue_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AIB_DISABLE_PLUGINS", raising=False)
    PluginManager().registry  # noqa: B018 - collecting the registry records the catalogue
    file = catalog.cache_file()
    assert file.is_file() and catalog.load(set()) is not None
    data = json.loads(file.read_text())
    data["packages"]["aib_sdk"] = "0" * 64  # as if a source file had changed since
    file.write_text(json.dumps(data))
    assert catalog.load(set()) is None
    pm = PluginManager()
    assert pm.spec_registry is pm.registry  # a miss collects everything ...
    assert catalog.load(set()) is not None  # ... and records the catalogue again
    assert catalog.load({"aib-provider-azure"}) is None  # another block-list is another installation


def test_fingerprint_follows_source_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "fp_pkg_for_test"
    package.mkdir()
    module = package / "__init__.py"
    module.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = catalog.fingerprint(["fp_pkg_for_test"])
    assert first["fp_pkg_for_test"]
    os.utime(module, ns=(1, 1))
    assert catalog.fingerprint(["fp_pkg_for_test"]) != first
    assert catalog.fingerprint(["no_such_package_here"]) == {"no_such_package_here": ""}


def test_a_manager_with_its_own_plugins_ignores_the_catalogue() -> None:
    pm = PluginManager(plugins=[fake_plugin()])
    assert "FakeImage" in pm.spec_registry.spec_models["source"]
    assert pm.spec_registry is pm.registry


def test_schema_is_built_once_per_catalogue(env: dict[str, str], tmp_path: Path) -> None:
    runs = [aib(env, tmp_path, "schema") for _ in range(3)]  # collect + catalogue; build + store; read back
    assert {out for _, _, out in runs} == {runs[0][2]} and json.loads(runs[0][2])["$defs"]
    assert "pydantic" in runs[1][1] and "pydantic" not in runs[2][1]
    file = catalog.cache_file(env)
    file.write_text(file.read_text() + " ")  # another catalogue (same content, other bytes): its own schema
    code, modules, out = aib(env, tmp_path, "schema")
    assert (code, out) == (0, runs[0][2]) and "pydantic" in modules
