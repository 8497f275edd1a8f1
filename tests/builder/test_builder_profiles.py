"""Build profiles: built-in ``local`` and ``[profiles.NAME]`` tables from aib.toml."""

from __future__ import annotations

import pytest

from aib_sdk.config import Config
from aib_sdk.errors import UsageError
from aib_sdk.options import BuildOptions
from aib_sdk.profiles import apply_profile_options, profile_table
from aib_sdk.testing.fakes import FakePlugin, fake_template

pytestmark = pytest.mark.anyio


def test_builtin_local_profile_redirects_arm_ids() -> None:
    options, rewrite = apply_profile_options(BuildOptions(profile="local"), Config({}, {}))
    assert rewrite == "local"
    assert options.params == {}


def test_config_profile_fills_options_and_explicit_values_win() -> None:
    config = Config(
        {
            "profiles": {
                "rehearse": {
                    "redirect_arm_ids": "local",
                    "params": {"region": "westeurope", "runOutputName": "from-profile"},
                    "map_uri": {"https://example.invalid/": "file:///srv/scripts/"},
                    "build_host": "qemu",
                    "timeout": 90,
                }
            }
        },
        {},
    )
    given = BuildOptions(profile="rehearse", params={"runOutputName": "explicit"}, build_host="fake")
    options, rewrite = apply_profile_options(given, config)
    assert rewrite == "local"
    assert options.params == {"region": "westeurope", "runOutputName": "explicit"}
    assert options.uri_map == {"https://example.invalid/": "file:///srv/scripts/"}
    assert options.build_host == "fake"
    assert options.timeout == 90.0
    assert given.params == {"runOutputName": "explicit"}  # the caller's options are not mutated


def test_profile_network_selects_the_qemu_network() -> None:
    """``[profiles.offline] network = "restrict"`` wins over ``[qemu] network`` and ``AIB_QEMU_NETWORK``."""
    from aib_provider_qemu.network import Network
    from aib_provider_qemu.settings import QemuSettings

    config = Config(
        {"qemu": {"network": "nat", "cpus": 2}, "profiles": {"offline": {"network": "restrict"}}},
        {"AIB_QEMU_NETWORK": "bridge:br0", "AIB_QEMU_MEMORY_MIB": "512"},
    )
    options, _ = apply_profile_options(BuildOptions(profile="offline"), config)
    assert options.config is not None
    settings = QemuSettings.from_config(options.config)
    assert settings.network == Network("restrict")
    assert (settings.cpus, settings.memory_mib) == (2, 512)  # the rest of the configuration is unchanged
    plain, _ = apply_profile_options(BuildOptions(profile="local"), config)
    assert plain.config is None  # no network in the profile: nothing replaced


def test_unknown_profile_and_unknown_keys_are_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"unknown profile 'nope' \(known: ci, local\)"):
        profile_table("nope", Config({"profiles": {"ci": {"build_host": "qemu"}}}, {}))
    with pytest.raises(UsageError, match="unknown key"):
        profile_table("ci", Config({"profiles": {"ci": {"buildhost": "qemu"}}}, {}))
    with pytest.raises(UsageError, match="redirect_arm_ids"):
        profile_table("ci", Config({"profiles": {"ci": {"redirect_arm_ids": "azure"}}}, {}))


async def test_profile_params_fill_placeholders_in_a_build(run_build, aib_fakes: FakePlugin, aib_home: Config):
    aib_home.data["profiles"] = {"ci": {"params": {"outputName": "from-profile"}}}
    template = fake_template(steps=1, targets=1, name="prof")
    template["properties"]["distribute"][0]["runOutputName"] = "<outputName>"
    result, _ = await run_build(template, profile="ci")
    assert result.run_state == "Succeeded"
    assert list(result.run_outputs) == ["from-profile"]
