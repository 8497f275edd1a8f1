"""The Linux deprovision step's commands (the fake communicator records them; the VM test reads the real disk).

A non-root build user: the default generalization, then the user's removal, both through ``sudo``. A root build user
(static-access images): no ``sudo``, and root is not removed. The template's own ``DeprovisioningScript.sh`` runs in
place of the default, and the build user is removed after it all the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aib_sdk.context import StepContext
from aib_sdk.steps.linux import DEPROVISION_SCRIPT, REMOVE_BUILD_USER, DeprovisionSpec, LinuxDeprovision
from aib_sdk.testing.fakes import FakeCommunicator, FakeWorld, make_run_context

pytestmark = pytest.mark.anyio


async def _deprovision(tmp_path: Path, world: FakeWorld) -> list[str]:
    comm = FakeCommunicator(world)
    step = StepContext(
        run=make_run_context(tmp_path),
        communicator=comm,
        phase="deprovision",
        index=0,
        name="Deprovision",
        type="Deprovision",
    )
    await LinuxDeprovision().run(DeprovisionSpec(type="Deprovision"), step)
    return comm.commands


async def test_a_non_root_build_user_is_removed_after_the_override(tmp_path: Path) -> None:
    commands = await _deprovision(tmp_path, FakeWorld())  # `cat` succeeds on the fake: the override path
    assert commands[:3] == ["id -un", f"cat {DEPROVISION_SCRIPT}", f"sudo sh {DEPROVISION_SCRIPT}"]
    assert commands[3].startswith("sudo sh -c ") and commands[3].endswith(" sh builder")
    assert "userdel -f -r" in commands[3] and "/etc/sudoers.d/*" in REMOVE_BUILD_USER


async def test_root_is_not_removed_and_no_sudo_is_used(tmp_path: Path) -> None:
    world = FakeWorld()
    world.fail_command(r"^id -un$", exit_code=0, output="root")
    world.fail_command(r"^cat ", exit_code=1)  # no override: the default generalization
    commands = await _deprovision(tmp_path, world)
    assert commands[0] == "id -un" and commands[2].startswith("sh -c ")
    assert not any(c.startswith("sudo") for c in commands)
    assert not any("userdel" in c for c in commands)


async def test_an_unexpected_user_name_fails_the_step(tmp_path: Path) -> None:
    from aib_sdk.errors import StepError

    world = FakeWorld()
    world.fail_command(r"^id -un$", exit_code=0, output="x; rm -rf /")
    with pytest.raises(StepError, match="unexpected user name"):
        await _deprovision(tmp_path, world)
