"""The plugin manager: built-ins, third-party registration, duplicates, block-list, routing."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel

from aib_sdk.config import Config
from aib_sdk.errors import PluginError, UsageError
from aib_sdk.models import specs
from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.plugins.registry import type_name_of


class WidgetTarget(specs.DistributorSpec):
    type: Literal["Widget"]
    uri: str


class OtherWidget(specs.DistributorSpec):
    type: Literal["Widget"]


class WidgetDistributor:
    type_name: ClassVar[str] = "Widget"
    spec_model: ClassVar[type[BaseModel]] = WidgetTarget

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        return isinstance(spec, WidgetTarget) and spec.uri.startswith("widget://")

    async def publish(self, artifact: Any, spec: BaseModel, ctx: Any) -> Any:
        raise NotImplementedError


class WidgetPlugin:
    @hookimpl
    def aib_register_distributors(self) -> list[type]:
        return [WidgetDistributor]


class ClashingPlugin:
    @hookimpl
    def aib_register_spec_models(self) -> list[tuple[str, type[BaseModel]]]:
        return [("distributor", OtherWidget)]


def test_builtins_declare_every_aib_type() -> None:
    reg = PluginManager(entry_points=False).registry
    assert set(reg.spec_models["source"]) >= {"PlatformImage", "ManagedImage", "SharedImageVersion"}
    assert set(reg.spec_models["customizer"]) >= {"Shell", "PowerShell", "File", "WindowsRestart", "WindowsUpdate"}
    assert set(reg.spec_models["validator"]) >= {"Shell", "PowerShell", "File"}
    assert set(reg.spec_models["distributor"]) >= {"ManagedImage", "SharedImage", "VHD", "DiskFile"}


def test_third_party_type_registers_and_routes() -> None:
    pm = PluginManager(entry_points=False, plugins=[WidgetPlugin()])
    assert pm.registry.spec_models["distributor"]["Widget"] is WidgetTarget
    spec = WidgetTarget.model_validate({"type": "Widget", "uri": "widget://x", "runOutputName": "w"})
    assert pm.distributor_for(spec, Config({}, {})) is WidgetDistributor
    other = WidgetTarget.model_validate({"type": "Widget", "uri": "nope://x", "runOutputName": "w"})
    with pytest.raises(UsageError, match="no installed provider publishes Widget"):
        pm.distributor_for(other, Config({}, {}))


def test_duplicate_type_name_is_rejected_with_both_owners() -> None:
    pm = PluginManager(entry_points=False, plugins=[WidgetPlugin()])
    pm.register(ClashingPlugin(), name="clash")
    with pytest.raises(PluginError, match=r"duplicate distributor type 'Widget'.*clash"):
        _ = pm.registry


def test_type_name_requires_single_literal() -> None:
    class NoLiteral(BaseModel):
        type: str

    with pytest.raises(PluginError, match="Literal"):
        type_name_of(NoLiteral)
    assert type_name_of(specs.ShellCustomizer) == "Shell"


def test_disabled_plugins_are_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIB_DISABLE_PLUGINS", "widgets, other")
    pm = PluginManager(entry_points=False)
    assert pm.disabled == {"widgets", "other"}
    pm.register(WidgetPlugin(), name="widgets")
    assert "widgets" not in pm.plugin_names()
    assert "Widget" not in pm.registry.spec_models["distributor"]


def test_no_build_host_is_a_clear_error() -> None:
    pm = PluginManager(entry_points=False)
    with pytest.raises(UsageError, match="no build host"):
        pm.build_host(None, Config({}, {}))
    with pytest.raises(UsageError, match="no build host named 'nope'"):
        pm.build_host("nope", Config({}, {}))


def test_third_party_implementations_are_asked_before_the_core() -> None:
    class AnyVhd:
        type_name: ClassVar[str] = "VHD"
        spec_model: ClassVar[type[BaseModel]] = specs.VhdDistributor

        @classmethod
        def claims(cls, spec: BaseModel, config: Config) -> bool:
            return True

        async def publish(self, artifact: Any, spec: BaseModel, ctx: Any) -> Any:
            raise NotImplementedError

    class AnyVhdPlugin:
        @hookimpl
        def aib_register_distributors(self) -> list[type]:
            return [AnyVhd]

    pm = PluginManager(entry_points=False, plugins=[AnyVhdPlugin()])
    spec = specs.VhdDistributor.model_validate({"type": "VHD", "runOutputName": "v", "uri": "file:///tmp/x.vhd"})
    assert pm.distributor_for(spec, Config({}, {})) is AnyVhd
    assert pm.registry.distributors[-1] is not AnyVhd  # the core's own come last
    assert pm.registry.owner[specs.VhdDistributor] == "aib-sdk"
