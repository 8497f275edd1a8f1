"""AIB's Linux steps: Shell, File, and the hidden deprovision step.

- ``Shell``: ``inline`` lines become one script (``#!/bin/sh -e``, so a failing line fails the step), a
  ``scriptUri`` is fetched (its ``sha256Checksum`` verified by the fetcher); either is uploaded to
  ``/tmp/script_<n>.sh``, made executable and run in its own session, as AIB (Packer's shell provisioner) does.
  A script that reboots the guest does not fail: the step waits until the guest answers with a new boot id.

  **A crash is not a reboot.** The script runs under a small wrapper that keeps a record in the build user's home
  (``~/.aib-step-<phase>-<n>``, synced): ``running`` before the script starts, ``shutdown`` when the guest's orderly
  shutdown signals it (SIGTERM/SIGHUP from ``reboot``/``shutdown -r``/systemd), ``exit N`` when the script ends.
  When the connection drops and the guest comes back with a new boot id, the record decides: ``shutdown`` (a reboot
  the script asked for, e.g. ``sudo reboot`` as its last command) or ``exit 0`` (it finished, then rebooted) → the
  run continues with the next step; ``exit N`` → the step fails with exit code N; ``running`` or no record (a
  kernel panic, ``echo b > /proc/sysrq-trigger``, a watchdog or power reset, ``reboot -f`` skipping the shutdown)
  → the step fails: the image may be half-built.
- ``File``: fetches ``sourceUri`` and uploads it to ``destination``. As in AIB the destination's directory must
  already exist and be writable by the build user (put files in ``/tmp`` and move them with a Shell step).
  The step also serves Windows guests (the upload goes through the guest's communicator).
- ``Deprovision``: run last by the Builder. It runs ``/tmp/DeprovisioningScript.sh`` when a customizer left
  one (its content is logged, as AIB does), else removes the build user's authorized keys, the SSH host keys,
  the machine id, cloud-init's state and shell histories, then syncs. Either way it then removes the build's
  access, as ``waagent -deprovision+user`` does: the build user (unless it is root), its sudoers entries, its
  groups and its home. That runs as root inside the step's own session, so it completes while the user is still
  logged in; since the user can no longer ``sudo poweroff`` afterwards, the same root shell starts a detached
  ``sleep 2; sync; poweroff`` (``systemctl poweroff`` on systemd, a signal to init on busybox) that survives the
  session, and the build host's own shutdown sees the guest power off by itself.

All three raise :class:`~aib_sdk.errors.StepError` with the exit code and the step's last log lines.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import ClassVar, Literal

import anyio
from pydantic import BaseModel

from aib_sdk.bases import CustomizerBase
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


REMOVE_BUILD_USER = r"""set -e
u="$1"
home=$(awk -F: -v u="$u" '$1==u {print $6}' /etc/passwd)
for f in /etc/sudoers /etc/sudoers.d/*; do
  [ -f "$f" ] || continue
  grep -q "^[[:space:]]*$u[[:space:]]" "$f" || continue
  sed -i "/^[[:space:]]*$u[[:space:]]/d" "$f"
  case "$f" in /etc/sudoers.d/*) grep -q '^[[:space:]]*[^#[:space:]]' "$f" || rm -f "$f" ;; esac
done
if command -v userdel >/dev/null 2>&1; then userdel -f -r "$u" >/dev/null 2>&1 || userdel -f "$u" || true; fi
for db in /etc/passwd /etc/shadow /etc/group /etc/gshadow; do
  [ -f "$db" ] || continue
  awk -F: -v OFS=: -v u="$u" '$1 != u { if (NF >= 4) { n = split($4, m, ","); s = "";
    for (i = 1; i <= n; i++) if (m[i] != u && m[i] != "") s = s (s == "" ? "" : ",") m[i]; $4 = s } print }' \
    "$db" > "$db.aib-new"
  cat "$db.aib-new" > "$db"
  rm -f "$db.aib-new"
done
case "$home" in /home/?*|/var/lib/?*) rm -rf "$home" ;; esac
sync
if command -v setsid >/dev/null 2>&1; then detach=setsid; else detach=nohup; fi
$detach sh -c 'sleep 2; sync; poweroff' </dev/null >/dev/null 2>&1 &
echo "removed the build user $u, its sudoers entries and home; the guest powers off in 2 s"
"""
"""Removes the build user ``$1`` (run as root, inside that user's session) and powers the guest off detached."""
_SAFE_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$")


async def _run_checked(step: StepContext, command: str, what: str) -> None:
    result = await step.communicator.run(command, on_output=step.on_output)
    if result.exit_code != 0:
        raise StepError(step.name, f"{what} failed", exit_code=result.exit_code, log_tail=step.tail)


def wrapped(remote: str, record: str) -> str:
    """The command running ``remote`` under the wrapper that records how it ended (see the module docstring).

    The script gets the session's stderr (fd 3) and is the wrapper's direct child (no subshell between them); once
    the first record is written (a home it cannot write to still shows in the log), the wrapper's own stderr goes to
    ``/dev/null``. A shell prints a job's status ("Terminated") to its stderr when it
    reaps a script a signal killed; during a shutdown the session's server is killed at the same moment, and that
    write raised SIGPIPE, which killed the wrapper before its trap recorded the shutdown (dash and busybox ash,
    about one reboot in 30 on the tiny guest).
    """
    r, s = shlex.quote(remote), f'"$HOME"/{shlex.quote(record)}'
    return (
        f"echo running > {s}; sync; exec 3>&2 2>/dev/null; "
        f"trap 'echo shutdown > {s}; sync; exit 143' TERM HUP; "
        f"if chmod +x {r} 2>&3; then {r} 0<&0 2>&3 3>&- & wait $!; rc=$?; else rc=$?; fi; "
        f'echo "exit $rc" > {s}; sync; exit $rc'
    )


async def _after_restart(step: StepContext, record: str) -> None:
    """The guest restarted while the script ran: continue only if it was a reboot the script asked for."""
    comm = step.communicator
    try:
        found = await comm.run(f'cat "$HOME"/{shlex.quote(record)} && rm -f "$HOME"/{shlex.quote(record)}')
    except CommunicatorError as exc:
        raise StepError(step.name, f"cannot read how the script ended after the restart: {exc}") from exc
    state = found.stdout.strip() if found.exit_code == 0 else ""
    if state == "shutdown" or state == "exit 0":
        how = "the script's reboot" if state == "shutdown" else "a reboot after the script ended"
        step.log(f"the guest is back after {how}; continuing", "stdout")
        return
    if state.startswith("exit "):
        code = int(state[5:]) if state[5:].isdigit() else 1
        raise StepError(
            step.name,
            f"script exited with exit code {code}, then the guest restarted",
            exit_code=code,
            log_tail=step.tail,
        )
    raise StepError(
        step.name,
        "the guest restarted in the middle of the script without an orderly shutdown (a crash, not a reboot the "
        "script asked for); the image may be half-built",
        log_tail=step.tail,
    )


async def _run_script(step: StepContext, local: Path, remote: str) -> None:
    """Upload a script, run it in its own session, and ride out a reboot it asked for (a crash fails the step)."""
    comm = step.communicator
    record = f".aib-step-{step.phase}-{step.index}"
    try:
        await comm.upload(local, remote)
        boot_id = await comm.boot_id()
        result = await comm.run(wrapped(remote, record), on_output=step.on_output)
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
        await _after_restart(step, record)
        return
    if result.exit_code != 0:
        raise StepError(
            step.name,
            f"script exited with exit code {result.exit_code}",
            exit_code=result.exit_code,
            log_tail=step.tail,
        )
    with contextlib.suppress(CommunicatorError):
        await comm.run(f'rm -f {shlex.quote(remote)} "$HOME"/{shlex.quote(record)}')


class ShellStep(CustomizerBase[ShellCustomizer]):
    """AIB's ``Shell`` customizer and in-VM validator."""

    validator_model: ClassVar[type[BaseModel] | None] = ShellCustomizer

    async def run(self, spec: ShellCustomizer, step: StepContext) -> None:
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


class FileStep(CustomizerBase[FileCustomizer]):
    """AIB's ``File`` customizer (and validator): download ``sourceUri`` to ``destination`` on the guest."""

    validator_model: ClassVar[type[BaseModel] | None] = FileCustomizer

    async def run(self, spec: FileCustomizer, step: StepContext) -> None:
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


class LinuxDeprovision(CustomizerBase[DeprovisionSpec]):
    """Generalizes the guest before capture (AIB's deprovisioning for Linux)."""

    hidden = True
    os_types = ("Linux",)

    async def run(self, spec: DeprovisionSpec, step: StepContext) -> None:
        comm = step.communicator
        who = await comm.run("id -un")
        user = who.stdout.strip() if who.exit_code == 0 else ""
        sudo = "" if user == "root" else "sudo "
        custom = await comm.run(f"cat {DEPROVISION_SCRIPT}")
        if custom.exit_code == 0:
            step.log(f"running the customized deprovisioning script {DEPROVISION_SCRIPT}:")
            for line in custom.stdout.splitlines():
                step.log(f"  {line}")
            await _run_checked(step, f"{sudo}sh {DEPROVISION_SCRIPT}", "the deprovisioning script")
        else:
            await _run_checked(step, f"{sudo}sh -c {shlex.quote(DEFAULT_DEPROVISION)}", "deprovisioning")
        if user == "root":
            step.log("the build user is root: it stays (its authorized keys are gone)")
            return
        if not _SAFE_USER.match(user):
            raise StepError(step.name, f"cannot remove the build user: unexpected user name {user!r}")
        command = f"{sudo}sh -c {shlex.quote(REMOVE_BUILD_USER)} sh {shlex.quote(user)}"
        await _run_checked(step, command, "removing the build user")


STEPS: list[type[Customizer]] = [ShellStep, FileStep, LinuxDeprovision]
