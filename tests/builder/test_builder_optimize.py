"""``optimize`` on the tiny guest: the Optimizing sub-state boots the captured image once, runs the workload script
(fetched, checksum verified), generalizes again and keeps that disk; boot times are recorded."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from aib_provider_qemu import hooks as qemu_hooks
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.events import LogLine, PhaseChanged
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fixtures_vm import read_ext4_file
from aib_sdk.testing.recorder import EventRecorder

pytestmark = [pytest.mark.anyio, pytest.mark.vm, pytest.mark.timeout(900)]

WORKLOAD = "#!/bin/sh\nset -e\necho warming caches\necho optimized | sudo tee /etc/aib-workload\n"


def options(tmp_path: Path, cache: Path, recorder: EventRecorder) -> BuildOptions:
    env = dict(os.environ, AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(cache))
    plugins = PluginManager(entry_points=False, plugins=[qemu_hooks])
    return BuildOptions(config=Config({}, env), plugins=plugins, build_host="qemu", on_event=recorder, timeout=600)


async def test_vm_boot_and_workload_optimization(tmp_path: Path, tiny_guest_source, tiny_guest_cache: Path) -> None:
    script = tmp_path / "workload.sh"
    script.write_text(WORKLOAD)
    out = tmp_path / "optimized.qcow2"
    template = {
        "source": tiny_guest_source,
        "customize": [{"type": "Shell", "name": "build", "inline": ["echo built | sudo tee /etc/aib-built"]}],
        "optimize": {
            "vmBoot": {"state": "Enabled"},
            "workload": {
                "state": "Enabled",
                "scriptUri": script.as_uri(),
                "sha256Checksum": hashlib.sha256(script.read_bytes()).hexdigest(),
            },
        },
        "validate": {"inVMValidations": [{"type": "Shell", "name": "check", "inline": ["cat /etc/aib-workload"]}]},
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": out.as_uri()}],
    }
    recorder = EventRecorder()
    opts = options(tmp_path, tiny_guest_cache, recorder)
    opts.base_directory = tmp_path
    result = await Builder(template, options=opts).run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    phases = [e.run_sub_state for e in recorder.of_kind(PhaseChanged)]
    assert phases == ["Queued", "Building", "Customizing", "Optimizing", "Validating", "Distributing"]
    lines = {(e.source, e.line) for e in recorder.of_kind(LogLine)}
    assert ("workload", "warming caches") in lines and ("check", "optimized") in lines
    record = json.loads((result.staging_directory / "runs" / result.run_id / "run.json").read_text())
    details = record["details"]
    steps = [(s["phase"], s["name"]) for s in details["steps"]]
    assert steps == [
        ("customize", "build"),
        ("deprovision", "Deprovision"),
        ("optimize", "workload"),
        ("deprovision", "Deprovision"),
        ("validate", "check"),
    ]
    timing = details["optimization"]
    assert timing["firstBootSeconds"] > 0 and timing["nextBootSeconds"] > 0
    assert list(details["phases"])[3] == "Optimizing"
    work = tmp_path / "read"
    work.mkdir()
    assert await read_ext4_file(out, "qcow2", "/etc/aib-workload", work) == b"optimized\n"
    assert await read_ext4_file(out, "qcow2", "/etc/aib-built", work) == b"built\n"


async def test_a_workload_with_a_wrong_checksum_fails_the_run(
    tmp_path: Path, tiny_guest_source, tiny_guest_cache: Path
) -> None:
    script = tmp_path / "workload.sh"
    script.write_text(WORKLOAD)
    template = {
        "source": tiny_guest_source,
        "optimize": {"workload": {"scriptUri": script.as_uri(), "sha256Checksum": "0" * 64}},
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": (tmp_path / "o.qcow2").as_uri()}],
    }
    opts = options(tmp_path, tiny_guest_cache, EventRecorder())
    opts.base_directory = tmp_path
    result = await Builder(template, options=opts).run()
    assert result.run_state == "Failed"
    assert "optimization failed" in result.last_run_status.message and "workload" in result.last_run_status.message
    assert not (tmp_path / "o.qcow2").exists()
