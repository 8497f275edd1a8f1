"""The published Debian image's real first boot: an image built by aib (agent-provisioned build boot, deprovisioned)
booted with a plain NoCloud seed (no aib marker, as a user gives one): cloud-init runs and ends in ``status: done``.

Uses the shared Debian base under ``AIB_CACHE`` (built once, like the apt test's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aib_provider_qemu import hooks as qemu_hooks
from aib_provider_qemu import seed
from aib_sdk.artifacts import DiskImage
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.protocols import VmRequest
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.recorder import EventRecorder

pytestmark = [pytest.mark.debian, pytest.mark.anyio, pytest.mark.timeout(2400)]

DEBIAN = {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "latest"}


async def test_the_built_image_first_boots_with_cloud_init_done(
    tmp_path: Path, tiny_guest_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aib_provider_qemu.host import QemuBuildHost

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIB_QEMU_")}
    env.update(AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(tiny_guest_cache))
    config = Config({}, env)
    options = BuildOptions(
        config=config,
        plugins=PluginManager(entry_points=False, plugins=[qemu_hooks]),
        build_host="qemu",
        on_event=EventRecorder(),
        timeout=2000,
    )
    out = tmp_path / "published.qcow2"
    template = {
        "source": DEBIAN,
        "customize": [{"type": "Shell", "name": "mark", "inline": ["echo built | sudo tee /etc/aib-built"]}],
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": out.as_uri()}],
    }
    result = await Builder(template, options=options).run()
    assert result.run_state == "Succeeded", result.last_run_status.message

    monkeypatch.setattr(seed, "AGENT_MARKER", "not-aib")  # a plain seed: cloud-init config only
    image = DiskImage(path=out, format="qcow2", os_type="Linux", hyper_v_generation="V1", access="cloud-init")
    ctx = make_run_context(tmp_path / "first-boot", config=config, emit=EventRecorder())
    async with QemuBuildHost().start(image, VmRequest(vm_size="Standard_D2s_v3"), ctx) as machine:
        found = await machine.communicator.run(
            "sudo -n cloud-init status --wait >/dev/null; sudo -n cloud-init status --long; cat /etc/aib-built; "
            "sudo -n test -e /run/aib-agent/active && echo agent-active; ls /etc/sudoers.d; true",
            timeout=600,
        )
        await machine.shutdown()
    assert "status: done" in found.stdout, found.stdout
    assert "built" in found.stdout.split()  # the customization is in the published disk
    assert "agent-active" not in found.stdout  # cloud-init provisioned this boot, not the agent
    assert "90-aib-agent-users" not in found.stdout  # the build boot's sudoers entry was deprovisioned
