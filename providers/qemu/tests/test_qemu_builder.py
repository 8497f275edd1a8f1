"""A full Builder run on the tiny guest with AIB's Linux steps, written out by the core's DiskFile distributor."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
from pathlib import Path

import asyncssh
import pytest

from aib_provider_qemu import hooks as qemu_hooks
from aib_provider_qemu import process
from aib_sdk.builder import Builder
from aib_sdk.communicators.ssh import SshCommunicator
from aib_sdk.config import Config
from aib_sdk.events import LogLine, StepFinished
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fixtures_vm import read_ext4_file

pytestmark = [pytest.mark.vm, pytest.mark.anyio]


async def test_builder_runs_shell_file_and_validator_steps(tmp_path: Path, tiny_guest_source, tiny_guest_cache):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    setup = scripts / "setup.sh"
    setup.write_text("#!/bin/sh\nset -e\necho configuring as $(id -un)\nsudo mkdir -p /opt/app\n")
    config_file = scripts / "app.conf"
    config_file.write_text("answer=42\n")
    out = tmp_path / "out" / "image.qcow2"
    out.parent.mkdir()
    template = {
        "source": tiny_guest_source,
        "customize": [
            {
                "type": "Shell",
                "name": "setup",
                "scriptUri": setup.as_uri(),
                "sha256Checksum": hashlib.sha256(setup.read_bytes()).hexdigest(),
            },
            {
                "type": "File",
                "name": "config",
                "sourceUri": config_file.as_uri(),
                "destination": "/tmp/app.conf",
                "sha256Checksum": hashlib.sha256(config_file.read_bytes()).hexdigest(),
            },
            {
                "type": "Shell",
                "name": "install",
                "inline": ["sudo mv /tmp/app.conf /opt/app/app.conf", "echo installed"],
            },
        ],
        "validate": {
            "inVMValidations": [
                {"type": "Shell", "name": "check", "inline": ["grep -q answer=42 /opt/app/app.conf", "echo valid"]},
            ]
        },
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": out.as_uri(), "format": "qcow2"}],
    }
    events: list[object] = []
    env = dict(os.environ, AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(tiny_guest_cache))
    options = BuildOptions(
        config=Config({}, env),
        plugins=PluginManager(entry_points=False, plugins=[qemu_hooks]),
        build_host="qemu",
        on_event=events.append,
        timeout=900,
        template_name="builder-qemu",
    )
    result = await Builder(template, options=options).run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    assert result.run_outputs["disk"].artifact_uri == out.as_uri() and out.is_file()
    lines = {(e.source, e.line) for e in events if isinstance(e, LogLine)}
    assert ("setup", "configuring as packer") in lines
    assert ("install", "installed") in lines and ("check", "valid") in lines
    finished = [(e.phase, e.name, e.ok) for e in events if isinstance(e, StepFinished)]
    assert ("customize", "setup", True) in finished and ("validate", "check", True) in finished
    assert await read_ext4_file(out, "qcow2", "/opt/app/app.conf", tmp_path) == b"answer=42\n"
    # Deprovisioned: the build user's key is gone from the published image.
    with pytest.raises(FileNotFoundError):
        await read_ext4_file(out, "qcow2", "/home/packer/.ssh/authorized_keys", tmp_path)


async def test_builder_abort_keeps_the_vm_reachable(tmp_path: Path, tiny_guest_source, tiny_guest_cache):
    template = {
        "source": tiny_guest_source,
        "customize": [{"type": "Shell", "name": "broken", "inline": ["echo leaving-a-trace > /tmp/trace", "exit 7"]}],
        "errorHandling": {"onCustomizerError": "abort"},
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": (tmp_path / "never.qcow2").as_uri()}],
    }
    env = dict(os.environ, AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(tiny_guest_cache))
    options = BuildOptions(
        config=Config({}, env),
        plugins=PluginManager(entry_points=False, plugins=[qemu_hooks]),
        build_host="qemu",
        timeout=600,
        template_name="abort-qemu",
    )
    result = await Builder(template, options=options).run()
    assert result.run_state == "Failed"
    message = result.last_run_status.message
    assert "exit code 7" in message and "kept" in message
    pid = int(re.search(r"kill (\d+)", message).group(1))  # type: ignore[union-attr]
    port = int(re.search(r"-p (\d+)", message).group(1))  # type: ignore[union-attr]
    key_file = Path(re.search(r"-i (\S+)", message).group(1))  # type: ignore[union-attr]
    sockets = Path(re.search(r"rm -r (\S+)\)", message).group(1))  # type: ignore[union-attr]
    try:
        assert process.alive(pid)
        known = (key_file.parent / "known_hosts").read_text()
        comm = SshCommunicator(
            port=port, username="packer", client_keys=[asyncssh.read_private_key(key_file)], host_keys=[known]
        )
        assert (await comm.run("cat /tmp/trace")).stdout == "leaving-a-trace"
        await comm.aclose()
    finally:
        process.send(pid, signal.SIGKILL)
        shutil.rmtree(sockets)
    assert await process.wait_exit(pid, 10)
    assert not (tmp_path / "never.qcow2").exists()
