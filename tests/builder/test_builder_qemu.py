"""The Builder with a real QEMU guest (the tiny test guest, TCG): a run with a validation VM, and a cancel."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest

from aib_provider_qemu import hooks as qemu_hooks
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.events import LogLine, StepStarted
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fakes import fake_plugin
from aib_sdk.testing.recorder import EventRecorder

pytestmark = [pytest.mark.anyio, pytest.mark.vm]


def _options(tmp_path: Path, cache: Path, recorder: EventRecorder, **extra: object) -> BuildOptions:
    env = dict(os.environ, AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(cache))
    plugins = PluginManager(entry_points=False, plugins=[qemu_hooks, fake_plugin()])
    return BuildOptions(
        config=Config({}, env), plugins=plugins, build_host="qemu", on_event=recorder, timeout=600, **extra
    )  # type: ignore[arg-type]


def _qemu_processes_using(path: Path) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmdline and str(path) in cmdline:
            found.append(int(pid))
    return found


async def test_real_guest_run_succeeds(tmp_path: Path, tiny_guest_source, tiny_guest_cache: Path):
    recorder = EventRecorder()
    out = tmp_path / "out.qcow2"
    template = {
        "source": tiny_guest_source,
        "customize": [
            {"type": "FakeStep", "name": "write", "commands": ["echo built-by-aib | sudo tee /etc/aib-marker"]},
        ],
        # Runs on a validation VM booted from the captured, deprovisioned disk.
        "validate": {"inVMValidations": [{"type": "FakeStep", "name": "check", "commands": ["cat /etc/aib-marker"]}]},
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": out.as_uri(), "format": "qcow2"}],
    }
    result = await Builder(template, options=_options(tmp_path, tiny_guest_cache, recorder, template_name="qemu")).run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    assert result.run_outputs["disk"].artifact_uri == out.as_uri() and out.is_file()
    assert result.source_exact_version
    lines = [(e.source, e.line) for e in recorder.of_kind(LogLine) if e.source == "check"]
    assert lines == [("check", "built-by-aib")]
    record = json.loads((result.staging_directory / "runs" / result.run_id / "run.json").read_text())
    assert [(s["phase"], s["name"]) for s in record["details"]["steps"]] == [
        ("customize", "write"),
        ("deprovision", "Deprovision"),
        ("validate", "check"),
    ]
    assert list(record["details"]["phases"]) == ["Queued", "Building", "Customizing", "Validating", "Distributing"]
    assert not (result.staging_directory / "runs" / result.run_id / "work").exists()


async def test_real_guest_cancel_destroys_the_vm(tmp_path: Path, tiny_guest_source, tiny_guest_cache: Path):
    recorder = EventRecorder()
    template = {
        "source": tiny_guest_source,
        "customize": [{"type": "FakeStep", "name": "stuck", "commands": ["sleep 600"]}],
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": (tmp_path / "o.qcow2").as_uri()}],
    }
    builder = Builder(template, options=_options(tmp_path, tiny_guest_cache, recorder, template_name="cancel"))
    events = builder.events()
    results = []
    with anyio.fail_after(300):
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                results.append(await builder.run())

            tg.start_soon(run)
            async for event in events:
                if isinstance(event, StepStarted):
                    break
            assert builder.staging is not None
            assert _qemu_processes_using(builder.staging.directory)  # the VM is running now
            await anyio.sleep(0.5)
            await builder.cancel()
    assert results[0].run_state == "Canceled"
    assert _qemu_processes_using(builder.staging.directory) == []
    assert not (tmp_path / "o.qcow2").exists()
