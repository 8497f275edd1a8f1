"""A crash is not a reboot, on the real tiny guest.

Attack: before, a guest that crashed and came back in the middle of a Shell step (``echo b > /proc/sysrq-trigger``)
counted as a successful reboot (the boot id changed), and a half-built image was published. After: the script's
wrapper records an orderly shutdown; without that record the step fails, naming itself. The legitimate use, a
script that ends with ``sudo reboot``, still continues with the next step once the guest is back.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aib_provider_qemu import hooks as qemu_hooks
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.events import LogLine
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.recorder import EventRecorder

pytestmark = [pytest.mark.anyio, pytest.mark.vm]


def _options(tmp_path: Path, cache: Path, recorder: EventRecorder, name: str) -> BuildOptions:
    env = dict(os.environ, AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(cache))
    return BuildOptions(
        config=Config({}, env),
        plugins=PluginManager(entry_points=False, plugins=[qemu_hooks]),
        build_host="qemu",
        on_event=recorder,
        timeout=900,
        template_name=name,
    )


async def test_a_script_ending_with_a_reboot_continues(tmp_path: Path, tiny_guest_source, tiny_guest_cache: Path):
    recorder = EventRecorder()
    template = {
        "source": tiny_guest_source,
        "customize": [
            {"type": "Shell", "name": "install", "inline": ["echo half > ~/state", "sudo reboot", "sleep 120"]},
            {"type": "Shell", "name": "after", "inline": ["cat ~/state /proc/sys/kernel/random/boot_id"]},
        ],
        "distribute": [{"type": "DiskFile", "runOutputName": "d", "uri": (tmp_path / "o.qcow2").as_uri()}],
    }
    result = await Builder(template, options=_options(tmp_path, tiny_guest_cache, recorder, "reboot")).run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    lines = [(e.source, e.line) for e in recorder.of_kind(LogLine)]
    assert ("install", "the guest is back after the script's reboot; continuing") in lines
    assert ("after", "half") in lines


async def test_a_crash_in_the_middle_of_a_script_fails_the_step(
    tmp_path: Path, tiny_guest_source, tiny_guest_cache: Path
):
    recorder = EventRecorder()
    out = tmp_path / "o.qcow2"
    template = {
        "source": tiny_guest_source,
        "customize": [
            {
                "type": "Shell",
                "name": "half-built",
                "inline": ["echo starting", "echo b | sudo tee /proc/sysrq-trigger", "sleep 120", "echo finished"],
            },
            {"type": "Shell", "name": "never", "inline": ["echo never-runs"]},
        ],
        "distribute": [{"type": "DiskFile", "runOutputName": "d", "uri": out.as_uri()}],
    }
    result = await Builder(template, options=_options(tmp_path, tiny_guest_cache, recorder, "crash")).run()
    message = result.last_run_status.message
    assert result.run_state == "Failed"
    assert "step 'half-built' failed" in message and "crash, not a reboot" in message
    assert not out.exists()
    assert not [e for e in recorder.of_kind(LogLine) if e.source == "never"]
