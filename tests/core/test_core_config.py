"""Configuration file and environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from aib_sdk.config import Config
from aib_sdk.errors import UsageError


def test_env_overrides_file(tmp_path: Path) -> None:
    cfg_file = tmp_path / "aib.toml"
    cfg_file.write_text(
        '[qemu]\nssh_user = "debian"\ncpus = 2\n[local-gallery.regions]\neastus = "/srv/east"\n'
        '[profiles.ci]\nbuild_host = "qemu"\n'
    )
    env = {"AIB_QEMU_SSH_USER": "admin", "AIB_LOCAL_GALLERY_ROOT": "/g", "HOME": str(tmp_path)}
    cfg = Config.load(cfg_file, env=env)
    assert cfg.section("qemu") == {"ssh_user": "admin", "cpus": 2}
    assert cfg.get("local-gallery", "root") == "/g"
    assert cfg.get("local-gallery", "regions") == {"eastus": "/srv/east"}
    assert cfg.profile("ci") == {"build_host": "qemu"}
    assert cfg.profile("missing") == {}


def test_default_locations(tmp_path: Path) -> None:
    cfg = Config.load(env={"HOME": str(tmp_path)})
    assert cfg.data == {}
    assert cfg.home == tmp_path / ".local" / "state" / "aib"
    assert cfg.cache == tmp_path / ".cache" / "aib"
    cfg2 = Config.load(env={"HOME": str(tmp_path), "AIB_HOME": "/h", "AIB_CACHE": "/c"})
    assert (cfg2.home, cfg2.cache) == (Path("/h"), Path("/c"))


def test_xdg_config_file_is_found(tmp_path: Path) -> None:
    (tmp_path / "aib").mkdir()
    (tmp_path / "aib" / "aib.toml").write_text("[azure]\narm_endpoint = 'http://127.0.0.1:1'\n")
    cfg = Config.load(env={"XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)})
    assert cfg.get("azure", "arm_endpoint") == "http://127.0.0.1:1"


def test_bad_config_is_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "aib.toml"
    bad.write_text("[qemu\n")
    with pytest.raises(UsageError, match="cannot read configuration"):
        Config.load(bad, env={})
    with pytest.raises(UsageError, match="not found"):
        Config.load(tmp_path / "nope.toml", env={})
