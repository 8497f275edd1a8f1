"""Providers' own types join the template's unions; the JSON Schema lists them."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel

from aib_sdk.errors import TemplateError
from aib_sdk.models.loader import load_template
from aib_sdk.models.schema import template_json_schema
from aib_sdk.models.specs import AibModel, DistributorSpec
from aib_sdk.models.template import build_properties_model
from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.plugins.registry import SpecKind


class S3Region(AibModel):
    bucket: str
    region: str


class S3ImageTarget(DistributorSpec):
    type: Literal["S3Image"]
    regions: list[S3Region]
    key: str


class DiskImageSource(AibModel):
    type: Literal["DiskImage"]
    uri: str
    format: Literal["qcow2", "raw", "vpc"] = "qcow2"


class TinyPlugin:
    """A provider registering one source and one distributor model."""

    @hookimpl
    def aib_register_spec_models(self) -> list[tuple[SpecKind, type[BaseModel]]]:
        return [("source", DiskImageSource), ("distributor", S3ImageTarget)]


@pytest.fixture(scope="module")
def tiny_pm() -> PluginManager:
    return PluginManager(entry_points=False, plugins=[TinyPlugin()])


def test_provider_types_validate(tiny_pm: PluginManager, props: dict[str, Any]) -> None:
    props["source"] = {"type": "DiskImage", "uri": "file:///images/base.qcow2"}
    props["distribute"].append(
        {"type": "S3Image", "runOutputName": "s3", "key": "img.raw", "regions": [{"bucket": "b", "region": "r"}]}
    )
    loaded = load_template(props, plugins=tiny_pm)
    assert isinstance(loaded.properties.source, DiskImageSource)
    target = loaded.properties.distribute[1]
    assert isinstance(target, S3ImageTarget) and target.regions[0].bucket == "b"


def test_provider_type_rules_and_unknown_without_provider(
    tiny_pm: PluginManager, pm: PluginManager, props: dict[str, Any]
) -> None:
    props["distribute"] = [{"type": "S3Image", "runOutputName": "s3", "regions": [{"bucket": "b"}], "key": "k"}]
    with pytest.raises(TemplateError) as exc:
        load_template(props, plugins=tiny_pm)
    assert [str(i) for i in exc.value.issues] == ['distribute[0].regions[0].region: missing required field "region"']
    with pytest.raises(TemplateError) as exc:
        load_template(props, plugins=pm)
    assert [str(i) for i in exc.value.issues] == [
        'distribute[0].type: unknown distributor type "S3Image" (installed: DiskFile, ManagedImage, SharedImage, VHD)'
    ]


def test_model_is_cached_per_registry(tiny_pm: PluginManager, pm: PluginManager) -> None:
    assert build_properties_model(tiny_pm.registry) is build_properties_model(tiny_pm.registry)
    assert build_properties_model(tiny_pm.registry) is not build_properties_model(pm.registry)


def test_json_schema_lists_installed_types(tiny_pm: PluginManager, pm: PluginManager) -> None:
    schema = template_json_schema(tiny_pm)
    defs = schema["$defs"]
    assert {"S3ImageTarget", "DiskImageSource", "ShellCustomizer", "ImageTemplate"} <= set(defs)
    props_schema = defs["TemplateProperties"]
    assert props_schema["additionalProperties"] is False
    assert "distribute" in props_schema["required"] and "source" in props_schema["required"]
    mapping = props_schema["properties"]["distribute"]["items"]["discriminator"]["mapping"]
    assert set(mapping) == {"DiskFile", "ManagedImage", "S3Image", "SharedImage", "VHD"}
    assert "inVMValidations" in defs["ValidateSpec"]["properties"]
    assert "osDiskSizeGB" in defs["VmProfile"]["properties"]
    assert "S3ImageTarget" not in template_json_schema(pm)["$defs"]


def test_single_and_missing_registrations() -> None:
    """With only one model of a kind (no union) or none, an unknown type still gets the same message."""

    class OnlyShell:
        @hookimpl
        def aib_register_spec_models(self) -> list[tuple[SpecKind, type[BaseModel]]]:
            from aib_sdk.models.specs import PlatformImageSource, ShellCustomizer, VhdDistributor

            return [("source", PlatformImageSource), ("customizer", ShellCustomizer), ("distributor", VhdDistributor)]

    minimal = PluginManager(entry_points=False, builtins=False, plugins=[OnlyShell()])
    props = {
        "source": {"type": "PlatformImage"},
        "customize": [{"type": "Shell", "inline": ["x"]}, {"type": "PowerShell", "inline": ["x"]}],
        "validate": {"inVMValidations": [{"type": "Shell", "inline": ["x"]}]},
        "distribute": [{"type": "VHD", "runOutputName": "v"}],
    }
    with pytest.raises(TemplateError) as exc:
        load_template(props, plugins=minimal)
    assert [str(i) for i in exc.value.issues] == [
        'customize[1].type: unknown customizer type "PowerShell" (installed: Shell)',
        'validate.inVMValidations[0].type: unknown validator type "Shell" (installed: none)',
    ]
