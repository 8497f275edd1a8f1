"""AIB's Linux steps: Shell, File, and the hidden deprovision step.

- ``Shell``: ``inline`` lines become one script (``#!/bin/sh -e``, so a failing line fails the step), a
  ``scriptUri`` is fetched (its ``sha256Checksum`` verified by the fetcher); either is uploaded to
  ``/tmp/script_<n>.sh``, made executable and run in its own session, as AIB (Packer's shell provisioner) does.
  A script that reboots the guest does not fail: the step waits until the guest answers with a new boot id.
- ``File``: fetches ``sourceUri`` and uploads it to ``destination``. As in AIB the destination's directory must
  already exist and be writable by the build user (put files in ``/tmp`` and move them with a Shell step).
  The step also serves Windows guests (the upload goes through the guest's communicator).
- ``Deprovision``: run last by the Builder. It runs ``/tmp/DeprovisioningScript.sh`` when a customizer left
  one (its content is logged, as AIB does), else removes the build user's authorized keys, the SSH host keys,
  the machine id, cloud-init's state and shell histories, then syncs.

All three raise :class:`~aib_sdk.errors.StepError` with the exit code and the step's last log lines.
"""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path, PurePosixPath
from typing import ClassVar, Literal

import anyio
from pydantic import BaseModel

from aib_sdk.context import StepContext
from aib_sdk.errors import CommunicatorError, StepError
from aib_sdk.models.specs import AibModel, FileCustomizer, ShellCustomizer
from aib_sdk.protocols import Customizer

REBOOT_TIMEOUT = 900.0
"""How long a step waits for the guest to come back after the script rebooted it."""
SHEBANG = "#!/bin/sh -e"
DEPROVISION_SCRIPT = "/tmp/DeprovisioningScript.sh"
DEFAULT_DEPROVISION = """set -e
rm -f /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub /etc/dropbear/dropbear_*_host_key
if [ -f /etc/machine-id ]; then : > /etc/machine-id; fi
rm -f /var/lib/dbus/machine-id
rm -rf /var/lib/cloud
rm -f /root/.*history /home/*/.*history
sync
"""


async def _run_checked(step: StepContext, command: str, what: str) -> None:
    result = await step.communicator.run(command, on_output=step.on_output)
    if result.exit_code != 0:
        raise StepError(step.name, f"{what} failed", exit_code=result.exit_code, log_tail=step.tail)


async def _run_script(step: StepContext, local: Path, remote: str) -> None:
    """Upload a script, run it in its own session, and ride out a reboot it causes."""
    comm = step.communicator
    try:
        await comm.upload(local, remote)
        boot_id = await comm.boot_id()
        result = await comm.run(f"chmod +x {shlex.quote(remote)} && {shlex.quote(remote)}", on_output=step.on_output)
    except CommunicatorError as exc:
        raise StepError(step.name, str(exc), log_tail=step.tail) from exc
    if result.exit_code == -1:
        step.log("the connection dropped (the guest restarted); waiting for it to come back", "stdout")
        try:
            await comm.wait_rebooted(boot_id, REBOOT_TIMEOUT)
        except CommunicatorError as exc:
            raise StepError(
                step.name, f"the guest did not come back after a restart: {exc}", log_tail=step.tail
            ) from exc
        return
    if result.exit_code != 0:
        raise StepError(
            step.name,
            f"script exited with exit code {result.exit_code}",
            exit_code=result.exit_code,
            log_tail=step.tail,
        )
    with contextlib.suppress(CommunicatorError):
        await comm.run(f"rm -f {shlex.quote(remote)}")


class ShellStep:
    """AIB's ``Shell`` customizer and in-VM validator."""

    type_name: ClassVar[str] = "Shell"
    spec_model: ClassVar[type[BaseModel]] = ShellCustomizer
    validator_model: ClassVar[type[BaseModel] | None] = ShellCustomizer

    async def run(self, spec: BaseModel, step: StepContext) -> None:
        assert isinstance(spec, ShellCustomizer)
        remote = f"/tmp/script_{step.phase}_{step.index}.sh"
        if spec.script_uri:
            local = await step.run.fetch(spec.script_uri, spec.sha256_checksum or None, label=step.name)
        elif spec.inline is not None:
            local = step.run.staging.work / "scripts" / f"script_{step.phase}_{step.index}.sh"
            await anyio.Path(local.parent).mkdir(parents=True, exist_ok=True)
            await anyio.Path(local).write_text(SHEBANG + "\n" + "\n".join(spec.inline) + "\n")
        else:
            raise StepError(step.name, "a Shell step needs scriptUri or inline")
        await _run_script(step, local, remote)


class FileStep:
    """AIB's ``File`` customizer (and validator): download ``sourceUri`` to ``destination`` on the guest."""

    type_name: ClassVar[str] = "File"
    spec_model: ClassVar[type[BaseModel]] = FileCustomizer
    validator_model: ClassVar[type[BaseModel] | None] = FileCustomizer

    async def run(self, spec: BaseModel, step: StepContext) -> None:
        assert isinstance(spec, FileCustomizer)
        if not spec.source_uri or not spec.destination:
            raise StepError(step.name, "a File step needs sourceUri and destination")
        local = await step.run.fetch(spec.source_uri, spec.sha256_checksum or None, label=step.name)
        destination = spec.destination
        comm = step.communicator
        linux = comm.os_type == "Linux"
        if linux and not PurePosixPath(destination).is_absolute():
            raise StepError(step.name, f"destination must be an absolute path, not {destination!r}")
        size = (await anyio.Path(local).stat()).st_size

        def progress(done: int, total: int | None) -> None:
            step.run.progress("upload", f"{step.name}: {destination}", done, total)

        try:
            await comm.upload(local, destination, on_progress=progress)
        except CommunicatorError as exc:
            # Only a failed upload pays for the check (a command round trip) that names AIB's rule.
            parent = PurePosixPath(destination).parent
            quoted = shlex.quote(str(parent))
            if linux and (await comm.run(f"test -d {quoted} && test -w {quoted}")).exit_code != 0:
                raise StepError(
                    step.name,
                    f"the destination directory {parent} does not exist or is not writable by the build "
                    "user (AIB rule: upload to an existing directory such as /tmp, then move it with sudo)",
                ) from exc
            raise StepError(step.name, f"upload to {destination} failed: {exc}", log_tail=step.tail) from exc
        step.log(f"uploaded {spec.source_uri} ({size} bytes) to {destination}")


class DeprovisionSpec(AibModel):
    """The hidden last step of a Linux build (not part of templates)."""

    type: Literal["Deprovision"]
    name: str | None = None


class LinuxDeprovision:
    """Generalizes the guest before capture (AIB's deprovisioning for Linux)."""

    type_name: ClassVar[str] = "Deprovision"
    spec_model: ClassVar[type[BaseModel]] = DeprovisionSpec
    validator_model: ClassVar[type[BaseModel] | None] = None
    hidden: ClassVar[bool] = True
    os_types: ClassVar[tuple[str, ...]] = ("Linux",)

    async def run(self, spec: BaseModel, step: StepContext) -> None:
        comm = step.communicator
        custom = await comm.run(f"cat {DEPROVISION_SCRIPT}")
        if custom.exit_code == 0:
            step.log(f"running the customized deprovisioning script {DEPROVISION_SCRIPT}:")
            for line in custom.stdout.splitlines():
                step.log(f"  {line}")
            await _run_checked(step, f"sudo sh {DEPROVISION_SCRIPT}", "the deprovisioning script")
            return
        await _run_checked(step, f"sudo sh -c {shlex.quote(DEFAULT_DEPROVISION)}", "deprovisioning")


STEPS: list[type[Customizer]] = [ShellStep, FileStep, LinuxDeprovision]
