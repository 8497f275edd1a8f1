"""Provider settings: each provider reads its own table; BuildOptions' settings and flags lie over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from aib_provider_local_gallery.settings import GallerySettings
from aib_provider_qemu.settings import QemuSettings
from aib_sdk.builder.plan import make_plan
from aib_sdk.config import Config
from aib_sdk.options import BuildOptions
from aib_sdk.testing.fakes import fake_template, make_run_context

pytestmark = pytest.mark.anyio


def test_settings_lie_over_the_file_and_the_environment() -> None:
    config = Config(
        {"qemu": {"build_user": "file", "cpus": 1}},
        {"AIB_QEMU_BUILD_USER": "env", "AIB_QEMU_MEMORY_MIB": "512"},
    )
    over = config.with_settings({"*": {"build_user": "everyone"}, "qemu": {"CPUS": 4}})
    section = over.section("qemu")
    assert section["build_user"] == "everyone" and section["cpus"] == 4 and section["memory_mib"] == "512"
    assert config.section("qemu")["build_user"] == "env"  # the original is unchanged
    assert over.section("local-gallery") == {"build_user": "everyone"}
    assert config.with_settings({}) is config


async def test_the_flags_reach_each_provider_as_its_own_setting(tmp_path: Path, aib_plugins, aib_home) -> None:
    options = BuildOptions(config=aib_home, plugins=aib_plugins, build_host="fake", create_missing=True)
    plan = await make_plan(fake_template(steps=0, targets=1, name="s"), options)
    assert GallerySettings.from_config(plan.config).create_missing
    assert not QemuSettings.from_config(plan.config).trust_on_first_use
    ctx = make_run_context(tmp_path, config=aib_home, options=BuildOptions(trust_on_first_use=True))
    assert QemuSettings.from_config(ctx.config).trust_on_first_use
    assert not GallerySettings.from_config(ctx.config).create_missing


async def test_an_embedder_sets_one_provider_only(tmp_path: Path, aib_home) -> None:
    options = BuildOptions(settings={"qemu": {"trust_on_first_use": True, "build_user": "builder"}})
    ctx = make_run_context(tmp_path, config=aib_home, options=options)
    qemu = QemuSettings.from_config(ctx.config)
    assert qemu.trust_on_first_use and qemu.build_user == "builder"
    assert "trust_on_first_use" not in ctx.config.section("local-gallery")
