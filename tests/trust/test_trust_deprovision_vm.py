"""No build access left in the image, on the real tiny guest.

Attack: before, the captured image kept the build user, its ``NOPASSWD:ALL`` sudoers entry and its home (AIB's
``waagent -deprovision+user`` removes them). After: the hidden deprovision step removes all three while logged in
as that user, the guest still powers off cleanly, the template's own ``DeprovisioningScript.sh`` override still runs,
and a validation VM booted from the captured disk still logs in (its seed creates a fresh user). Checked by reading
the captured disk with ``debugfs``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aib_provider_qemu import hooks as qemu_hooks
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.events import LogLine, WarningEvent
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fixtures_vm import read_ext4_file
from aib_sdk.testing.recorder import EventRecorder

pytestmark = [pytest.mark.anyio, pytest.mark.vm]


async def test_build_user_sudoers_and_home_are_gone(tmp_path: Path, tiny_guest_source, tiny_guest_cache: Path):
    recorder = EventRecorder()
    out = tmp_path / "out.raw"
    template = {
        "source": tiny_guest_source,
        "customize": [
            {
                "type": "Shell",
                "name": "grant",
                "inline": [
                    "sudo mkdir -p /etc/sudoers.d",
                    'echo "$(id -un) ALL=(ALL) NOPASSWD:ALL" | sudo tee /etc/sudoers.d/90-aib-build',
                    "echo 'root ALL=(ALL) ALL' | sudo tee /etc/sudoers.d/10-keep",
                    "id -un | sudo tee /etc/aib-build-user",
                    'sudo sh -c "echo wheel:x:10:root,$(id -un) >> /etc/group"',
                    "touch ~/marker",
                ],
            },
            {
                "type": "Shell",
                "name": "override",
                "inline": ["printf 'touch /etc/custom-deprovision-ran\\n' > /tmp/DeprovisioningScript.sh"],
            },
        ],
        "validate": {"inVMValidations": [{"type": "Shell", "name": "usable", "inline": ["id -un", "sudo true"]}]},
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": out.as_uri(), "format": "raw"}],
    }
    env = dict(os.environ, AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(tiny_guest_cache))
    options = BuildOptions(
        config=Config({}, env),
        plugins=PluginManager(entry_points=False, plugins=[qemu_hooks]),
        build_host="qemu",
        on_event=recorder,
        timeout=900,
        template_name="deprovision",
    )
    result = await Builder(template, options=options).run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    user = (await read_ext4_file(out, "raw", "/etc/aib-build-user", tmp_path)).decode().strip()
    assert user and user != "root"
    passwd = (await read_ext4_file(out, "raw", "/etc/passwd", tmp_path)).decode()
    group = (await read_ext4_file(out, "raw", "/etc/group", tmp_path)).decode()
    assert not [line for line in passwd.splitlines() if line.startswith(f"{user}:")]
    assert passwd.startswith("root:") and "wheel:x:10:root\n" in group and f"{user}:" not in group
    with pytest.raises(FileNotFoundError):
        await read_ext4_file(out, "raw", "/etc/sudoers.d/90-aib-build", tmp_path)
    with pytest.raises(FileNotFoundError):
        await read_ext4_file(out, "raw", f"/home/{user}/marker", tmp_path)
    assert await read_ext4_file(out, "raw", "/etc/sudoers.d/10-keep", tmp_path) == b"root ALL=(ALL) ALL\n"
    assert await read_ext4_file(out, "raw", "/etc/custom-deprovision-ran", tmp_path) == b""
    # The guest powered itself off after the removal: no forced power-off, no kill.
    lines = [e.line for e in recorder.of_kind(LogLine)]
    assert any("removed the build user" in line for line in lines)
    assert not any("ACPI" in line for line in lines)
    assert not any("killed" in w.message for w in recorder.of_kind(WarningEvent))
    assert next(e.line for e in recorder.of_kind(LogLine) if e.source == "usable") == user
