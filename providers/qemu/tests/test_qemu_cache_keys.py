"""The QEMU host's part of every step-cache key: the settings that change what a build's disk holds."""

from __future__ import annotations

from pathlib import Path

from aib_provider_qemu.host import QemuBuildHost
from aib_sdk.cache.keys import root_key
from aib_sdk.cache.session import host_facts
from aib_sdk.config import Config
from aib_sdk.protocols import VmRequest
from aib_sdk.testing.fakes import make_run_context


def _root(tmp_path: Path, config: Config, vm: VmRequest) -> str:
    ctx = make_run_context(tmp_path, config=config)
    return root_key(source={"sha256": "0" * 64}, host=host_facts(QemuBuildHost, vm, None, ctx))


def test_build_user_network_and_vm_shape_change_the_key(tmp_path: Path) -> None:
    env = {"AIB_HOME": str(tmp_path / "home"), "AIB_CACHE": str(tmp_path / "cache")}
    base = _root(tmp_path, Config({}, env), VmRequest())
    assert base == _root(tmp_path, Config({"qemu": {"cpus": 4, "accel": "tcg"}}, env), VmRequest())  # disk-neutral
    for config, vm in (
        (Config({"qemu": {"build_user": "builder"}}, env), VmRequest()),
        (Config({}, {**env, "AIB_QEMU_NETWORK": "none"}), VmRequest()),
        (Config({}, env), VmRequest(os_disk_size_gb=40)),
        (Config({}, env), VmRequest(data_disk_sizes_gb=(8,))),
        (Config({}, env), VmRequest(vm_size="Standard_D4s_v3")),
    ):
        assert _root(tmp_path, config, vm) != base
