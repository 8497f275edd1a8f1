"""Validation reports everything in one pass, and hints come from the entry's own model in fitting words."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel

from aib_sdk.errors import TemplateError
from aib_sdk.models.loader import load_template
from aib_sdk.models.specs import DistributorSpec
from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.plugins.registry import SpecKind


class Tarball(DistributorSpec):
    """A third-party type: it has ``compressLevel``, not DiskFile's ``compression``."""

    type: Literal["Tarball"]
    path: str
    compress_level: int = 6


class TarballPlugin:
    @hookimpl
    def aib_register_spec_models(self) -> list[tuple[SpecKind, type[BaseModel]]]:
        return [("distributor", Tarball)]


def messages(pm: PluginManager, props: dict[str, Any], **kw: Any) -> list[str]:
    with pytest.raises(TemplateError) as info:
        load_template({"properties": props, **kw}, plugins=pm)
    return [f"{i.path}: {i.message}" for i in info.value.issues]


def test_a_duplicate_run_output_name_comes_with_the_other_errors(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"].append({"type": "VHD", "runOutputName": "disk"})
    props["customize"][0]["inline"] = "not a list"
    props["buildTimeoutInMinutes"] = 2
    found = messages(pm, props)
    assert "properties.distribute[1].runOutputName: runOutputName 'disk' is used twice" in found
    assert any(m.startswith("properties.customize[0].inline") for m in found)
    assert any(m.startswith("properties.buildTimeoutInMinutes") for m in found)
    assert len([m for m in found if "used twice" in m]) == 1


def test_hints_come_from_the_entry_own_model(props: dict[str, Any]) -> None:
    pm = PluginManager(entry_points=False)
    pm.register(TarballPlugin(), name="aib-tarball")
    props["distribute"] = [{"type": "Tarball", "path": "/x.tar", "compress": 9, "runOutputName": "t"}]
    [found] = messages(pm, props)
    assert found == (
        'properties.distribute[0].compress: unknown field "compress" for Tarball (from aib-tarball) '
        '(field names are case-sensitive; did you mean "compressLevel"?)'
    )
    assert "compression" not in found  # DiskFile's field, which a Tarball lacks
    props["distribute"] = [{"type": "Tarball", "path": "/x.tar", "runOutputName": "t", "zzz": 1}]
    [found] = messages(pm, props)
    assert found.endswith('unknown field "zzz" for Tarball (from aib-tarball)')


def test_aib_types_keep_aib_wording(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"][0]["Compression"] = "zstd"
    [found] = messages(pm, props)
    assert found == (
        'properties.distribute[0].Compression: unknown field "Compression" '
        '(AIB field names are case-sensitive; did you mean "compression"?)'
    )
    props["distribute"][0].pop("Compression")
    props["customize"][0]["scriptUri2"] = "https://x"
    [found] = messages(pm, props)
    assert 'did you mean "scriptUri"' in found
