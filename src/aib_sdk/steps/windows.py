"""AIB's Windows steps: PowerShell, WindowsRestart, WindowsUpdate, and Sysprep deprovisioning.

Each runs through any :class:`~aib_sdk.protocols.Communicator` that executes ``cmd.exe`` command lines (WinRM).
Scripts go as ``powershell -EncodedCommand`` when they fit one command line, else are uploaded to
``C:\\Windows\\Temp`` and run with ``-File``. Every script runs under ``$ErrorActionPreference = 'Stop'``, so a
throwing cmdlet or a failing native command's exit code fails the step.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import ClassVar, Literal

import anyio
from pydantic import BaseModel

from aib_sdk.communicators.winrm import scripts
from aib_sdk.context import StepContext
from aib_sdk.errors import CommunicatorError, StepError
from aib_sdk.models.specs import (
    PowerShellCustomizer,
    StepSpec,
    WindowsRestartCustomizer,
    WindowsUpdateCustomizer,
)
from aib_sdk.protocols import Customizer

TEMP = "C:\\Windows\\Temp"
DEFAULT_RESTART_COMMAND = 'shutdown /r /f /t 0 /c "packer restart"'
DEFAULT_RESTART_TIMEOUT = "5m"
RESTART_OK_CODES = frozenset({0, 1115, 1190, -1})
"""shutdown's "already shutting down" (1115) and "already scheduled" (1190), and a connection cut by the reboot."""
DEFAULT_SEARCH_CRITERIA = "BrowseOnly=0 and IsInstalled=0"
UPDATE_REBOOT, UPDATE_MORE = 101, 102
MAX_UPDATE_ROUNDS = 20
RESTART_CHECK_INTERVAL = 5.0
DEPROVISIONING_SCRIPT = "C:\\DeprovisioningScript.ps1"
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``5m``, ``2h``, ``30s`` or ``1h30m``."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r} (use e.g. 5m, 90s, 2h)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def wrap(body: str) -> str:
    """A script that stops on the first error and exits with the script's (or last native command's) code."""
    return (
        "$ErrorActionPreference = 'Stop'\n"
        "$ProgressPreference = 'SilentlyContinue'\n"
        "$global:LASTEXITCODE = 0\n"
        "try {\n"
        f"{body}\n"
        "} catch {\n"
        "  [Console]::Error.WriteLine(($_ | Out-String).Trim())\n"
        "  exit 1\n"
        "}\n"
        "if ($global:LASTEXITCODE) { exit $global:LASTEXITCODE }\n"
        "exit 0\n"
    )


def _fail(step: StepContext, message: str, exit_code: int | None = None) -> StepError:
    return StepError(step.name, message, exit_code=exit_code, log_tail=list(step.tail))


async def _upload_text(step: StepContext, text: str, remote: str) -> None:
    """Write ``text`` (UTF-8 with BOM, as Windows PowerShell 5 wants for non-ASCII) to ``remote`` on the guest."""
    work = step.run.staging.work  # inside the run: aib gc removes it if the builder is killed meanwhile
    directory = Path(
        await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="aib-ps-", dir=work if work.is_dir() else None))
    )
    local = directory / "script.ps1"
    try:
        await anyio.Path(local).write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
        await step.communicator.upload(local, remote)
    except CommunicatorError as exc:
        raise _fail(step, f"could not upload a script to {remote}: {exc}") from exc
    finally:
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(directory, ignore_errors=True))


async def run_powershell(step: StepContext, script: str, *, label: str = "script") -> int:
    """Run ``script`` on the guest, streaming its lines to the step log; return its exit code."""
    comm = step.communicator
    try:
        if scripts.fits(script):
            result = await comm.run(scripts.encode_command(script), on_output=step.on_output)
            return result.exit_code
        remote = f"{TEMP}\\aib-{label}-{uuid.uuid4().hex[:8]}.ps1"
        await _upload_text(step, script, remote)
        command = scripts.POWERSHELL.replace("-EncodedCommand ", f'-File "{remote}"')
        result = await comm.run(command, on_output=step.on_output)
        with contextlib.suppress(CommunicatorError):
            await comm.run(f'del /f /q "{remote}"')
        return result.exit_code
    except CommunicatorError as exc:
        raise _fail(step, f"{label} could not run: {exc}") from exc


def elevated_runner(file: str, task: str, *, system: bool) -> str:
    """Runs ``file`` through a scheduled task (as SYSTEM, or as the user with highest privileges), as Packer and
    AIB do; streams the task's output and exits with its exit code."""
    principal = (
        "New-ScheduledTaskPrincipal -UserId 'NT AUTHORITY\\SYSTEM' -LogonType ServiceAccount -RunLevel Highest"
        if system
        else 'New-ScheduledTaskPrincipal -UserId "$env:USERDOMAIN\\$env:USERNAME" -LogonType S4U -RunLevel Highest'
    )
    return (
        "# aib:elevated\n$ErrorActionPreference = 'Stop'\n"
        f'$task = {scripts.quote(task)}\n$file = {scripts.quote(file)}\n$log = "$file.log"\n'
        f"$principal = {principal}\n"
        "$arguments = '/c powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File \"' + $file + "
        "'\" > \"' + $log + '\" 2>&1'\n"
        "$action = New-ScheduledTaskAction -Execute 'cmd.exe' -Argument $arguments\n"
        "$settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries "
        "-ExecutionTimeLimit (New-TimeSpan -Days 1)\n"
        "Register-ScheduledTask -TaskName $task -Action $action -Principal $principal -Settings $settings -Force"
        " | Out-Null\n"
        "$pos = 0\n"
        "function Write-NewLog {\n"
        "  if (-not (Test-Path -LiteralPath $log)) { return }\n"
        "  $fs = [IO.File]::Open($log, 'Open', 'Read', 'ReadWrite')\n"
        "  try { $null = $fs.Seek($script:pos, 'Begin'); $text = (New-Object IO.StreamReader($fs)).ReadToEnd();"
        " $script:pos = $fs.Length } finally { $fs.Close() }\n"
        "  if ($text) { [Console]::Out.Write($text) }\n"
        "}\n"
        "try {\n"
        "  Start-ScheduledTask -TaskName $task\n"
        "  do { Start-Sleep -Seconds 1; Write-NewLog; $state = (Get-ScheduledTask -TaskName $task).State }"
        " while ($state -eq 'Running' -or $state -eq 'Queued')\n"
        "  Write-NewLog\n"
        "  $code = (Get-ScheduledTaskInfo -TaskName $task).LastTaskResult\n"
        "} finally {\n"
        "  Unregister-ScheduledTask -TaskName $task -Confirm:$false -ErrorAction SilentlyContinue\n"
        "  Remove-Item -LiteralPath $file, $log -Force -ErrorAction SilentlyContinue\n"
        "}\n"
        "exit $code\n"
    )


async def run_elevated(step: StepContext, script: str, *, system: bool) -> int:
    """Upload ``script`` and run it through a scheduled task (see :func:`elevated_runner`); return its exit code."""
    name = f"aib-{uuid.uuid4().hex[:12]}"
    file = f"{TEMP}\\{name}.ps1"
    await _upload_text(step, script, file)
    return await run_powershell(step, elevated_runner(file, name, system=system), label="elevated")


class PowerShellStep:
    """AIB's ``PowerShell`` customizer and validator: inline lines or a ``scriptUri``, optionally elevated."""

    type_name: ClassVar[str] = "PowerShell"
    spec_model: ClassVar[type[BaseModel]] = PowerShellCustomizer
    validator_model: ClassVar[type[BaseModel] | None] = PowerShellCustomizer
    os_types: ClassVar[tuple[str, ...]] = ("Windows",)

    async def run(self, spec: BaseModel, step: StepContext) -> None:
        assert isinstance(spec, PowerShellCustomizer)
        if spec.inline:
            body, label = "\n".join(spec.inline), "inline"
        else:
            assert spec.script_uri is not None
            path = await step.run.fetch(spec.script_uri, spec.sha256_checksum or None, label=step.name)
            body = await anyio.Path(path).read_text(encoding="utf-8-sig")
            label = "script"
        valid = {0, *(spec.valid_exit_codes or [])}
        if spec.run_elevated:
            code = await run_elevated(step, wrap(body), system=spec.run_as_system)
        elif spec.inline and scripts.fits(wrap(body)):
            code = await run_powershell(step, wrap(body), label=label)
        else:
            # Scripts keep their own top level (param blocks, #requires): upload and call them from the wrapper.
            remote = f"{TEMP}\\aib-{uuid.uuid4().hex[:8]}.ps1"
            await _upload_text(step, body, remote)
            code = await run_powershell(step, wrap(f"& {scripts.quote(remote)}"), label=label)
            with contextlib.suppress(CommunicatorError):
                await step.communicator.run(f'del /f /q "{remote}"')
        if code not in valid:
            raise _fail(step, f"PowerShell {label} exited with code {code}", code)
        if code != 0:
            step.log(f"exit code {code} accepted (validExitCodes)", "info")


async def restart(
    step: StepContext, command: str, check_command: str | None, timeout: float, *, what: str = "restart"
) -> None:
    """Restart the guest and wait until it is back (changed boot id, then ``check_command`` succeeds)."""
    comm = step.communicator
    deadline = time.monotonic() + timeout
    try:
        before = await comm.boot_id()
    except CommunicatorError as exc:
        raise _fail(step, f"cannot read the boot id before the {what}: {exc}") from exc
    step.log(f"restarting: {command}", "info")
    try:
        result = await comm.run(command, on_output=step.on_output, timeout=max(1.0, timeout))
    except CommunicatorError as exc:
        raise _fail(step, f"the restart command failed: {exc}") from exc
    if result.exit_code not in RESTART_OK_CODES:
        raise _fail(step, f"the restart command exited with code {result.exit_code}", result.exit_code)
    try:
        await comm.wait_rebooted(before, max(0.0, deadline - time.monotonic()))
    except CommunicatorError as exc:
        raise _fail(step, f"the guest did not come back within the restart timeout of {timeout:g}s: {exc}") from exc
    step.log("the guest restarted (boot id changed)", "info")
    if not check_command:
        return
    while True:
        try:
            check = await comm.run(
                check_command, on_output=step.on_output, timeout=max(1.0, deadline - time.monotonic())
            )
            if check.exit_code == 0:
                return
        except CommunicatorError as exc:
            step.log(f"restart check: {exc}", "info")
        if time.monotonic() >= deadline:
            raise _fail(step, f"restartCheckCommand did not succeed within {timeout:g}s")
        await anyio.sleep(min(RESTART_CHECK_INTERVAL, max(0.0, deadline - time.monotonic())))


class WindowsRestartStep:
    """AIB's ``WindowsRestart``: run ``restartCommand``, then wait for a new boot and ``restartCheckCommand``."""

    type_name: ClassVar[str] = "WindowsRestart"
    spec_model: ClassVar[type[BaseModel]] = WindowsRestartCustomizer
    validator_model: ClassVar[type[BaseModel] | None] = None
    os_types: ClassVar[tuple[str, ...]] = ("Windows",)

    async def run(self, spec: BaseModel, step: StepContext) -> None:
        assert isinstance(spec, WindowsRestartCustomizer)
        timeout = parse_duration(spec.restart_timeout or DEFAULT_RESTART_TIMEOUT)
        await restart(step, spec.restart_command or DEFAULT_RESTART_COMMAND, spec.restart_check_command, timeout)


def _filter_entries(filters: list[str]) -> list[tuple[bool, str]]:
    entries: list[tuple[bool, str]] = []
    for text in filters:
        action, sep, expression = text.partition(":")
        if not sep or action not in ("include", "exclude") or not expression.strip():
            raise ValueError(f"filter {text!r} must be 'include:<expression>' or 'exclude:<expression>'")
        entries.append((action == "include", expression))
    return entries


def windows_update_script(search_criteria: str, filters: list[tuple[bool, str]], update_limit: int) -> str:
    """One round of the Windows Update Agent: search, filter, download, install; exit 0 (nothing to do),
    101 (installed, reboot required) or 102 (installed, search again)."""
    rules = ",\n".join(
        f"  @{{ Include = ${'true' if inc else 'false'}; Test = {{ {expr} }} }}" for inc, expr in filters
    )
    return (
        "# aib:windows-update\n"
        f"$searchCriteria = {scripts.quote(search_criteria)}\n"
        f"$updateLimit = {update_limit}\n"
        f"$filters = @(\n{rules}\n)\n"
        "function Test-Include($update) {\n"
        "  foreach ($f in $filters) { if ($update | Where-Object -FilterScript $f.Test) { return $f.Include } }\n"
        "  return $false\n"
        "}\n"
        "$session = New-Object -ComObject 'Microsoft.Update.Session'\n"
        "$session.ClientApplicationID = 'aib-sdk'\n"
        'Write-Output "Searching for Windows updates ($searchCriteria)"\n'
        "$found = $session.CreateUpdateSearcher().Search($searchCriteria)\n"
        "$selected = New-Object -ComObject 'Microsoft.Update.UpdateColl'\n"
        "$pending = 0\n"
        "foreach ($update in $found.Updates) {\n"
        '  if (-not (Test-Include $update)) { Write-Output "Skipping: $($update.Title)"; continue }\n'
        "  if ($selected.Count -ge $updateLimit) { $pending++; continue }\n"
        "  if (-not $update.EulaAccepted) { $update.AcceptEula() | Out-Null }\n"
        '  Write-Output "Selected: $($update.Title)"\n'
        "  $selected.Add($update) | Out-Null\n"
        "}\n"
        "if ($selected.Count -eq 0) { Write-Output 'No Windows updates to install'; exit 0 }\n"
        "$downloader = $session.CreateUpdateDownloader()\n$downloader.Updates = $selected\n"
        "$null = $downloader.Download()\n"
        "$installer = $session.CreateUpdateInstaller()\n$installer.Updates = $selected\n"
        "$result = $installer.Install()\n"
        "for ($i = 0; $i -lt $selected.Count; $i++) {\n"
        "  Write-Output ('Installed {0}: result code {1}' -f $selected.Item($i).Title, "
        "$result.GetUpdateResult($i).ResultCode)\n"
        "}\n"
        'Write-Output "aib-windows-update: installed=$($selected.Count) pending=$pending '
        'reboot=$($result.RebootRequired)"\n'
        "if ($result.ResultCode -ne 2 -and $result.ResultCode -ne 3) { exit 1 }\n"
        f"if ($result.RebootRequired) {{ exit {UPDATE_REBOOT} }}\n"
        f"exit {UPDATE_MORE}\n"
    )


class WindowsUpdateStep:
    """AIB's ``WindowsUpdate`` (after rgl/packer-plugin-windows-update): install, restart, repeat until done."""

    type_name: ClassVar[str] = "WindowsUpdate"
    spec_model: ClassVar[type[BaseModel]] = WindowsUpdateCustomizer
    validator_model: ClassVar[type[BaseModel] | None] = None
    os_types: ClassVar[tuple[str, ...]] = ("Windows",)
    restart_timeout: ClassVar[float] = 4 * 3600.0

    async def run(self, spec: BaseModel, step: StepContext) -> None:
        assert isinstance(spec, WindowsUpdateCustomizer)
        try:
            filters = _filter_entries(spec.filters or ["include:$true"])
        except ValueError as exc:
            raise _fail(step, str(exc)) from exc
        script = windows_update_script(
            spec.search_criteria or DEFAULT_SEARCH_CRITERIA, filters, spec.update_limit or 1000
        )
        for round_no in range(1, MAX_UPDATE_ROUNDS + 1):
            step.log(f"Windows Update round {round_no}", "info")
            # The Windows Update Agent refuses to download or install over a WinRM (network) logon: run it
            # as SYSTEM through a scheduled task, as rgl/packer-plugin-windows-update does.
            code = await run_elevated(step, wrap(script), system=True)
            if code == 0:
                return
            if code == UPDATE_REBOOT:
                await restart(step, DEFAULT_RESTART_COMMAND, None, self.restart_timeout, what="update restart")
            elif code != UPDATE_MORE:
                raise _fail(step, f"Windows Update failed with exit code {code}", code)
        raise _fail(step, f"updates still pending after {MAX_UPDATE_ROUNDS} rounds")


class WindowsDeprovisionSpec(StepSpec):
    """The hidden final step of a Windows build (AIB's Sysprep generalize)."""

    type: Literal["WindowsDeprovision"]


TOKEN_POLICY = "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System"
GP_SCRIPTS = "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Group Policy"

# Runs as SYSTEM while Windows powers off (a machine shutdown script): by then the build's WinRM session is closed,
# so the account, listener and rules it used can go; it then unregisters itself. ``$u`` is the build account.
_REMOVE_ACCESS_BODY = (
    "$ErrorActionPreference = 'SilentlyContinue'\r\n"
    "Remove-ItemProperty $tp LocalAccountTokenFilterPolicy\r\n"
    "Remove-Item WSMan:\\localhost\\Listener\\* -Recurse -Force\r\n"
    "Get-NetFirewallRule | ? { $_.Name -like 'WINRM-HTTP*' -or $_.Name -like 'aib-sdk-winrm*' -or "
    "$_.DisplayGroup -eq 'Windows Remote Management' } | Remove-NetFirewallRule\r\n"
    "Set-Service WinRM -StartupType Disabled\r\n"
    "Remove-LocalUser $u\r\n"
    'Get-CimInstance Win32_UserProfile | ? { $_.LocalPath -like "*\\$u" } | Remove-CimInstance\r\n'
    'Remove-Item -Recurse -Force "$gp\\Scripts\\Shutdown", "$gp\\State\\Machine\\Scripts\\Shutdown", $PSCommandPath\r\n'
)


def remove_access_script() -> str:
    """Removes the build's access from the image (as ``waagent -deprovision+user`` does on Linux), before Sysprep.

    ``LocalAccountTokenFilterPolicy`` goes at once (the session's token is already issued). The build account, its
    profile, the WinRM listeners and firewall rules (``Enable-PSRemoting``'s and the seed's ``-Profile Any`` one) and
    WinRM's automatic start are what the build's own session runs on, so they are removed by a machine shutdown
    script registered here: it runs as SYSTEM when the build host powers the guest off, after the session closed,
    and unregisters itself.
    """
    return (
        "# aib:remove-build-access\n"
        f"$u = $env:USERNAME; $gp = '{GP_SCRIPTS}'; $tp = '{TOKEN_POLICY}'\n"
        "Remove-ItemProperty $tp LocalAccountTokenFilterPolicy -EA 0\n"
        '$f = "$env:SystemRoot\\System32\\GroupPolicy\\Machine\\Scripts\\Shutdown\\aib-remove-build-access.ps1"\n'
        "New-Item -ItemType Directory -Force (Split-Path $f) | Out-Null\n"
        f"Set-Content $f (\"`$u='$u'; `$gp='$gp'; `$tp='$tp'`r`n\" + {scripts.quote(_REMOVE_ACCESS_BODY)})\n"
        'foreach ($k in "$gp\\Scripts\\Shutdown\\0", "$gp\\State\\Machine\\Scripts\\Shutdown\\0") {\n'
        '  New-Item -Force "$k\\0" | Out-Null\n'
        "  @{GPO_ID='LocalGPO'; SOID='Local'; FileSysPath=\"$env:SystemRoot\\System32\\GroupPolicy\\Machine\"; "
        "DisplayName='Local Group Policy'; GPOName='Local Group Policy'; PSScriptOrder='1'}.GetEnumerator() | "
        "% { New-ItemProperty -Force $k $_.Key -Value $_.Value | Out-Null }\n"
        "  @{Script=$f; Parameters=''}.GetEnumerator() | % { New-ItemProperty -Force \"$k\\0\" $_.Key -Value $_.Value "
        "| Out-Null }\n"
        '  New-ItemProperty -Force "$k\\0" IsPowershell -Value 1 -PropertyType DWord | Out-Null\n'
        '  New-ItemProperty -Force "$k\\0" ExecTime -Value 0 -PropertyType QWord | Out-Null\n'
        "}\n"
        "'build access (account, WinRM listeners, firewall rules) is removed at the power-off'\n"
    )


def deprovision_script() -> str:
    """AIB's deprovisioning: ``C:\\DeprovisioningScript.ps1`` when present (its content logged), else Sysprep."""
    return (
        "# aib:deprovision\n"
        f"$custom = {scripts.quote(DEPROVISIONING_SCRIPT)}\n"
        "if (Test-Path -LiteralPath $custom) {\n"
        '  Write-Output "Running $custom, which reads:"\n'
        '  Get-Content -LiteralPath $custom | ForEach-Object { Write-Output "  | $_" }\n'
        "  & $custom\n"
        "} else {\n"
        "  Write-Output 'Running the default deprovisioning: Sysprep /generalize'\n"
        "  foreach ($svc in 'RdAgent', 'WindowsAzureTelemetryService', 'WindowsAzureGuestAgent') {\n"
        "    if (Get-Service -Name $svc -ErrorAction SilentlyContinue) {\n"
        "      while ((Get-Service -Name $svc).Status -ne 'Running') { Start-Sleep -Seconds 5 }\n"
        "    }\n"
        "  }\n"
        '  foreach ($f in "$env:SystemRoot\\System32\\Sysprep\\unattend.xml", '
        '"$env:SystemRoot\\Panther\\unattend.xml") {\n'
        "    if (Test-Path -LiteralPath $f) { Remove-Item -LiteralPath $f -Force }\n"
        "  }\n"
        '  & "$env:SystemRoot\\System32\\Sysprep\\Sysprep.exe" /oobe /generalize /quiet /quit\n'
        "  $deadline = (Get-Date).AddMinutes(30)\n"
        "  while ($true) {\n"
        "    $state = (Get-ItemProperty 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Setup\\State')"
        ".ImageState\n"
        "    Write-Output $state\n"
        "    if ($state -eq 'IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE') { break }\n"
        "    if ((Get-Date) -gt $deadline) { [Console]::Error.WriteLine('Sysprep did not finish'); exit 1 }\n"
        "    Start-Sleep -Seconds 10\n"
        "  }\n"
        "}\n"
    )


class WindowsDeprovisionStep:
    """Generalizes a Windows image with Sysprep (the Builder runs it last on Windows builds)."""

    type_name: ClassVar[str] = "WindowsDeprovision"
    spec_model: ClassVar[type[BaseModel]] = WindowsDeprovisionSpec
    validator_model: ClassVar[type[BaseModel] | None] = None
    hidden: ClassVar[bool] = True
    os_types: ClassVar[tuple[str, ...]] = ("Windows",)

    async def run(self, spec: BaseModel, step: StepContext) -> None:
        # First the build's access (whichever deprovisioning runs next, the override or Sysprep).
        code = await run_powershell(step, wrap(remove_access_script()), label="remove-build-access")
        if code != 0:
            raise _fail(step, f"removing the build's access exited with code {code}", code)
        code = await run_powershell(step, wrap(deprovision_script()), label="deprovision")
        if code != 0:
            raise _fail(step, f"deprovisioning (Sysprep) exited with code {code}", code)


STEPS: list[type[Customizer]] = [PowerShellStep, WindowsRestartStep, WindowsUpdateStep, WindowsDeprovisionStep]
