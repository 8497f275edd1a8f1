"""A guest that prints no ready line and reads no seed: the tiny guest baked for ``access: static``.

Readiness comes from SSH probes alone (the build host is not told the guest's ready line), and power-off is the
default ``sync; sudo poweroff`` through the guest's own init, with each stage's duration in the events.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from aib_provider_qemu.host import QemuBuildHost
from aib_provider_qemu.tiny_source import TinyGuestSource
from aib_sdk.artifacts import DiskImage
from aib_sdk.config import Config
from aib_sdk.events import Event, LogLine
from aib_sdk.models.specs import PlatformImageSource
from aib_sdk.protocols import VmRequest
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.tiny_guest import SPEC

pytestmark = [pytest.mark.vm, pytest.mark.anyio]


def _config(tmp_path: Path, cache: Path, **settings: str) -> Config:
    env = {**os.environ, "AIB_HOME": str(tmp_path / "home"), "AIB_CACHE": str(cache)}
    env.update({f"AIB_QEMU_{k.upper()}": v for k, v in settings.items()})
    return Config({}, env)


async def _bake(tmp_path: Path, cache: Path) -> tuple[DiskImage, Path, Path]:
    """Boot the tiny guest once with its seed, mark it static, capture it: the disk, the client key, known_hosts."""
    ctx = make_run_context(tmp_path / "bake", config=_config(tmp_path / "bake", cache))
    image = await TinyGuestSource().resolve(PlatformImageSource.model_validate(SPEC), ctx)
    key, known = tmp_path / "id_ed25519", tmp_path / "known_hosts"
    async with QemuBuildHost().start(image, VmRequest(vm_size="Standard_B1s"), ctx) as machine:
        assert machine.client_key_file is not None
        shutil.copy(machine.client_key_file, key)
        known.write_text("".join(f"{line}\n" for line in machine.communicator.pinned_host_keys))  # type: ignore[union-attr]
        assert (await machine.communicator.run("sudo touch /etc/aib-static && sync")).exit_code == 0
        await machine.shutdown()
        artifact = await machine.capture(ctx)
    baked = tmp_path / "baked.qcow2"
    shutil.move(artifact.path, baked)
    static = dataclasses.replace(image, path=baked, format="qcow2", access="static", attributes={}, sha256=None)
    return static, key, known


async def test_static_guest_without_ready_line_is_reached_and_powered_off(
    tmp_path: Path, tiny_guest_cache: Path
) -> None:
    image, key, known = await _bake(tmp_path, tiny_guest_cache)
    assert "ready_line" not in image.attributes and "poweroff_command" not in image.attributes
    events: list[Event] = []
    config = _config(tmp_path, tiny_guest_cache, ssh_user="packer", ssh_private_key=str(key), ssh_host_key=str(known))
    ctx = make_run_context(tmp_path, config=config, emit=events.append)
    async with QemuBuildHost().start(image, VmRequest(vm_size="Standard_B1s"), ctx) as machine:
        assert machine.image.access == "static"
        assert (await machine.communicator.run("id -un; test -e /etc/aib-static")).stdout == "packer"
        await machine.shutdown()
        assert not machine.alive()
    lines = [e for e in events if isinstance(e, LogLine)]
    serial_ready = next(i for i, e in enumerate(lines) if e.stream == "serial" and "AIB-TINY-GUEST-READY" in e.line)
    logged_ready = next(i for i, e in enumerate(lines) if e.source == "qemu" and "guest ready on" in e.line)
    assert serial_ready < logged_ready, "the first login follows the guest's own readiness"
    off = [e.line for e in lines if e.source == "qemu" and "powered off by" in e.line]
    assert off and "'sync; sudo poweroff'" in off[0] and " s in all)" in off[0], off
    assert not any("ACPI" in e.line or "killed" in e.line for e in lines if e.source == "qemu")
