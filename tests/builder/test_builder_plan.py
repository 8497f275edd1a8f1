"""What is decided before a run: template forms and names, --source, timeouts, routing errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aib_sdk.builder.plan import make_plan
from aib_sdk.errors import TemplateError, UsageError
from aib_sdk.options import BuildOptions
from aib_sdk.testing.fakes import fake_template

pytestmark = pytest.mark.anyio


async def test_source_option_forms(aib_plugins, aib_home, tmp_path: Path):
    """``BuildOptions.source`` takes what ``--source`` takes: a spec, JSON text, a disk path or a disk URL."""

    async def source(value: object) -> object:
        options = BuildOptions(config=aib_home, plugins=aib_plugins, source=value)  # type: ignore[arg-type]
        return (await make_plan(fake_template(steps=0), options)).source_spec

    assert (await source({"type": "FakeImage", "version": "2"})).version == "2"  # type: ignore[attr-defined]
    assert (await source('{"type": "FakeImage", "version": "3"}')).version == "3"  # type: ignore[attr-defined]
    disk = tmp_path / "base.qcow2"
    disk.write_bytes(b"")
    # A disk becomes a DiskImage spec (its type belongs to the qemu provider, not installed here).
    with pytest.raises(TemplateError, match='unknown source type "DiskImage"'):
        await source(disk)
    with pytest.raises(UsageError, match="not valid JSON"):
        await source("{not json")
    with pytest.raises(UsageError, match="no such disk file"):
        await source(tmp_path / "missing.qcow2")


async def test_names_timeouts_and_source_replacement(aib_plugins, aib_home, tmp_path: Path):
    options = BuildOptions(config=aib_home, plugins=aib_plugins, build_host="fake")
    bare = await make_plan(fake_template(steps=0), options)
    assert bare.name == "template" and bare.timeout == 240 * 60 and bare.base_directory is None
    named = await make_plan(
        fake_template(steps=0), BuildOptions(config=aib_home, plugins=aib_plugins, template_name="x")
    )
    assert named.name == "x"
    file = tmp_path / "from-file.json"
    file.write_text(json.dumps(fake_template(steps=0, name="resource-name", buildTimeoutInMinutes=10)))
    by_file = await make_plan(file, BuildOptions(config=aib_home, plugins=aib_plugins, timeout=3))
    assert by_file.name == "resource-name" and by_file.base_directory == tmp_path
    assert by_file.timeout == 3 and "--timeout" in by_file.timeout_text
    swapped = await make_plan(
        fake_template(steps=0),
        BuildOptions(config=aib_home, plugins=aib_plugins, source={"type": "FakeImage", "version": "9"}),
    )
    assert swapped.source_spec.version == "9"  # type: ignore[attr-defined]


async def test_errors_before_starting(aib_plugins, aib_home, tmp_path: Path):
    options = BuildOptions(config=aib_home, plugins=aib_plugins)
    with pytest.raises(UsageError, match="cannot read "):
        await make_plan(tmp_path / "missing.json", options)
    broken = tmp_path / "broken.json"
    broken.write_text("{ nope")
    with pytest.raises(TemplateError, match="invalid JSON at line 1"):
        await make_plan(broken, options)
    unknown = fake_template(steps=0)
    unknown["distribute"] = [{"type": "VHD", "runOutputName": "v", "uri": "gopher://nowhere/x.vhd"}]
    with pytest.raises(UsageError, match="no installed provider publishes VHD"):
        await make_plan(unknown, options)
    with pytest.raises(UsageError, match="no build host named"):
        await make_plan(fake_template(steps=0), BuildOptions(config=aib_home, plugins=aib_plugins, build_host="nope"))
