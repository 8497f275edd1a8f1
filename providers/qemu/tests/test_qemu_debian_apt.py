"""A Debian 12 build on the default network (``nat``): a Shell step installs a package from the apt mirror the
host uses, a later step uses it, and the captured disk holds both."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import anyio
import pytest

from aib_provider_qemu import hooks as qemu_hooks
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.events import LogLine
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.recorder import EventRecorder

pytestmark = [pytest.mark.debian, pytest.mark.anyio, pytest.mark.timeout(2400)]

USE_JQ = 'echo \'{"by": "aib"}\' | jq -r .by | sudo tee /etc/aib-jq'
DEBIAN = {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "latest"}


def debugfs(raw: Path, offset: int, request: str) -> str:
    out = subprocess.run(["debugfs", "-R", request, f"{raw}?offset={offset}"], capture_output=True, text=True)
    return out.stdout


async def test_apt_get_install_in_a_shell_step_lands_in_the_image(tmp_path: Path, tiny_guest_cache: Path) -> None:
    recorder = EventRecorder()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIB_QEMU_")}
    env.update(AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(tiny_guest_cache))  # the shared Debian base cache
    options = BuildOptions(
        config=Config({}, env),
        plugins=PluginManager(entry_points=False, plugins=[qemu_hooks]),
        build_host="qemu",
        on_event=recorder,
        timeout=2000,
    )
    out = tmp_path / "debian-jq.qcow2"
    template = {
        "source": DEBIAN,
        "customize": [
            {
                "type": "Shell",
                "name": "install-jq",
                "inline": ["sudo apt-get update", "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y jq"],
            },
            {
                "type": "Shell",
                "name": "use-jq",
                "inline": ['echo \'{"by": "aib"}\' | jq -r .by | sudo tee /etc/aib-jq'],
            },
        ],
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": out.as_uri()}],
    }
    result = await Builder(template, options=options).run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    used = [e.line for e in recorder.of_kind(LogLine) if e.source == "use-jq"]
    assert used == ["aib"]

    raw = tmp_path / "disk.raw"
    await anyio.run_process(["qemu-img", "convert", "-O", "raw", str(out), str(raw)])
    with raw.open("rb") as fh:
        mbr = fh.read(512)
    (start,) = struct.unpack_from("<I", mbr, 446 + 8)
    offset = start * 512
    assert "Type: regular" in debugfs(raw, offset, "stat /usr/bin/jq")
    assert debugfs(raw, offset, "cat /etc/aib-jq") == "aib\n"
    assert "Package: jq" in debugfs(raw, offset, "cat /var/lib/dpkg/status")
