"""How a DiskImage's guest is reached: static access inferred from the static-access settings, and a guest that
ignored the seed explained as such (against a real SSH server on 127.0.0.1 presenting another host key)."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh
import pytest

from aib_provider_qemu.machine import QemuMachine
from aib_provider_qemu.settings import QemuSettings
from aib_provider_qemu.url_source import DiskImageSource, UrlDiskSource
from aib_sdk.artifacts import DiskImage
from aib_sdk.config import Config
from aib_sdk.errors import BuildHostError
from aib_sdk.events import LogLine
from aib_sdk.options import BuildOptions
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.recorder import EventRecorder
from aib_sdk.testing.ssh_server import LoopbackSshServer

pytestmark = pytest.mark.anyio


def _ctx(tmp_path: Path, env: dict[str, str], events: EventRecorder | None = None):  # type: ignore[no-untyped-def]
    config = Config({}, {"AIB_HOME": str(tmp_path / "home"), "AIB_CACHE": str(tmp_path / "cache"), **env})
    return make_run_context(tmp_path, config=config, emit=events, options=BuildOptions(config=config))


async def test_static_access_is_inferred_from_the_static_settings(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * 65536)
    key = tmp_path / "id"
    key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    static_env = {"AIB_QEMU_SSH_USER": "admin", "AIB_QEMU_SSH_PRIVATE_KEY": str(key)}
    spec = DiskImageSource.model_validate({"type": "DiskImage", "uri": disk.as_uri(), "format": "raw"})
    events = EventRecorder()
    image = await UrlDiskSource().resolve(spec, _ctx(tmp_path, static_env, events))
    assert image.access == "static"
    assert any('access "static"' in e.line for e in events.of_kind(LogLine))
    assert (await UrlDiskSource().resolve(spec, _ctx(tmp_path, {}))).access == "cloud-init"
    explicit = spec.model_copy(update={"access": "cloud-init"})
    assert (await UrlDiskSource().resolve(explicit, _ctx(tmp_path, static_env))).access == "cloud-init"


async def test_a_guest_that_ignored_the_seed_points_at_static_access(tmp_path: Path) -> None:
    async with LoopbackSshServer(tmp_path / "root") as server, LoopbackSshServer(tmp_path / "other") as other:
        comm = other.communicator()  # pins the other server's host key, as a seed the guest ignored would
        comm.port = server.port
        machine = QemuMachine(
            image=DiskImage(path=tmp_path / "disk.raw", format="raw", access="cloud-init"),
            ctx=_ctx(tmp_path, {}),
            settings=QemuSettings(),
            directory=tmp_path,
            socket_dir=tmp_path,
            overlay=tmp_path / "overlay.qcow2",
            communicator=comm,
            pid=os.getpid(),  # "QEMU" is running: this process
        )
        with pytest.raises(BuildHostError) as info:
            await machine.wait_ready(60)
        await comm.aclose()
    text = str(info.value)
    assert "not the pinned one" in text and "did not take the cloud-init seed" in text
    assert '"access": "static"' in text
