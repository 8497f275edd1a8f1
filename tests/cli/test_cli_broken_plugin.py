"""A plugin whose class lacks a required member: refused by name at registration, listed by ``aib plugins``
(exit 1), while every other command keeps working with the healthy plugins and warns.

The plugin is a real distribution (a ``.dist-info`` with an entry point) on ``PYTHONPATH`` of an ``aib`` subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel

from aib_sdk.errors import PluginError
from aib_sdk.models.specs import StepSpec
from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.plugins.registry import check_class

AIB = Path(sys.executable).parent / "aib"

PLUGIN = """
from typing import ClassVar, Literal

from pydantic import BaseModel

from aib_sdk.models.specs import StepSpec
from aib_sdk.plugins import hookimpl


class WaveSpec(StepSpec):
    type: Literal["Wave"]


class Wave:  # no validator_model: the protocol requires it
    type_name: ClassVar[str] = "Wave"
    spec_model: ClassVar[type[BaseModel]] = WaveSpec

    async def run(self, spec, step):
        pass


@hookimpl
def aib_register_customizers():
    return [Wave]
"""


@pytest.fixture
def broken_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    (site / "aib_wave").mkdir(parents=True)
    (site / "aib_wave" / "__init__.py").write_text(PLUGIN)
    info = site / "aib_wave-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aib-wave\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[aib_sdk]\naib-wave = aib_wave\n")
    return dict(
        os.environ,
        PYTHONPATH=str(site),
        AIB_HOME=str(tmp_path / "home"),
        AIB_CACHE=str(tmp_path / "cache"),
        XDG_CONFIG_HOME=str(tmp_path / "no-config"),
    )


def _aib(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AIB), *args], env=env, capture_output=True, text=True, timeout=180, check=False)


def test_aib_plugins_names_the_broken_plugin_and_exits_1(broken_env: dict[str, str]) -> None:
    done = _aib(broken_env, "plugins")
    assert done.returncode == 1, done.stderr
    assert "aib-wave" in done.stdout
    assert "Wave lacks the required member 'validator_model'" in done.stdout
    assert "Traceback" not in done.stderr
    listing = json.loads(_aib(broken_env, "plugins", "--json").stdout)
    assert "validator_model" in listing["aib-wave"]["error"]
    assert "Shell" in listing["aib-sdk"]["types"]["customizer"]  # the healthy plugins are still listed


def test_other_commands_work_with_the_healthy_plugins_and_warn(broken_env: dict[str, str], tmp_path: Path) -> None:
    template = tmp_path / "t.json"
    template.write_text(
        json.dumps(
            {
                "source": {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12"},
                "customize": [{"type": "Shell", "name": "hi", "inline": ["echo hi"]}],
                "distribute": [{"type": "VHD", "runOutputName": "disk"}],
            }
        )
    )
    done = _aib(broken_env, "validate", str(template))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "aib: warning: plugin aib-wave is left out" in done.stderr and "validator_model" in done.stderr
    assert "Traceback" not in done.stderr
    schema = _aib(broken_env, "schema")
    assert schema.returncode == 0 and "Shell" in schema.stdout and '"Wave"' not in schema.stdout


class _Spec(StepSpec):
    type: Literal["Jump"]


def test_check_names_plugin_class_and_members() -> None:
    class NoRun:
        type_name: ClassVar[str] = "Jump"
        spec_model: ClassVar[type[BaseModel]] = _Spec
        validator_model: ClassVar[type[BaseModel] | None] = None

    with pytest.raises(PluginError, match=r"plugin 'acme': customizer .*NoRun lacks the required member 'run'"):
        check_class("customizer", NoRun, "acme")

    class BadModel(NoRun):
        spec_model: ClassVar[Any] = dict

        async def run(self, spec: Any, step: Any) -> None:
            pass

    with pytest.raises(PluginError, match="is not a pydantic model"):
        check_class("customizer", BadModel, "acme")
    with pytest.raises(PluginError, match=r"distributor .* lacks the required members 'claims', 'publish'"):
        check_class("distributor", NoRun, "acme")


def test_an_embedding_manager_leaves_the_broken_plugin_out(caplog: pytest.LogCaptureFixture) -> None:
    class Half:
        type_name: ClassVar[str] = "Jump"
        spec_model: ClassVar[type[BaseModel]] = _Spec

    class Plugin:
        @hookimpl
        def aib_register_customizers(self) -> list[Any]:
            return [Half]

    pm = PluginManager(entry_points=False, plugins=[Plugin()])
    registry = pm.registry
    assert "Jump" not in registry.customizers and "Shell" in registry.customizers
    [(_plugin, error)] = registry.broken.items()
    assert "Half lacks the required members 'validator_model', 'run'" in error
    assert any("left out" in r.getMessage() for r in caplog.records)
