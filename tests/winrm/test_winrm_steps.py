"""The Windows steps (PowerShell, WindowsRestart, WindowsUpdate, WindowsDeprovision) over WinRM to the test server."""

from __future__ import annotations

import hashlib
import math

import pytest

from aib_sdk.communicators.winrm import WinRMCommunicator
from aib_sdk.communicators.winrm.scripts import MAX_COMMAND_LINE
from aib_sdk.context import StepContext
from aib_sdk.errors import FetchError, StepError
from aib_sdk.events import LogLine
from aib_sdk.models.specs import PowerShellCustomizer, WindowsRestartCustomizer, WindowsUpdateCustomizer
from aib_sdk.steps.windows import (
    STEPS,
    PowerShellStep,
    WindowsDeprovisionSpec,
    WindowsDeprovisionStep,
    WindowsRestartStep,
    WindowsUpdateStep,
    parse_duration,
)
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.recorder import EventRecorder
from aib_sdk.testing.winrm_server import Reply

from .conftest import PASSWORD, USER

pytestmark = pytest.mark.anyio
PS_PREFIX = "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "


@pytest.fixture
def events():
    return EventRecorder()


@pytest.fixture
async def step_ctx(winrm_server, tmp_path, events):
    comm = WinRMCommunicator(
        "127.0.0.1",
        winrm_server.port,
        username=USER,
        password=PASSWORD,
        operation_timeout=1.0,
        poll_interval=0.2,
        connect_timeout=1.0,
    )
    ctx = make_run_context(tmp_path, emit=events)

    def make(spec_type: str, name: str = "step") -> StepContext:
        return StepContext(run=ctx, communicator=comm, phase="customize", index=0, name=name, type=spec_type)

    yield make
    await comm.aclose()


def ps(**fields) -> PowerShellCustomizer:
    return PowerShellCustomizer.model_validate({"type": "PowerShell", **fields})


def _update_script(server) -> str:
    runs = [server.task_script(c) for c in server.calls]
    runner = next(c.script for c in server.calls if server.task_script(c))
    assert "'NT AUTHORITY\\SYSTEM'" in runner  # the Update Agent needs a local (not network) logon
    return next(s for s in runs if s and "# aib:windows-update" in s)


def test_steps_are_registered_with_their_models():
    names = {s.type_name: s for s in STEPS}
    assert set(names) == {"PowerShell", "WindowsRestart", "WindowsUpdate", "WindowsDeprovision"}
    assert names["PowerShell"].validator_model is PowerShellCustomizer
    assert names["WindowsDeprovision"].spec_model.model_validate({"type": "WindowsDeprovision"})


async def test_inline_powershell_runs_encoded_with_stop_on_error(winrm_server, step_ctx, events):
    winrm_server.handler = lambda call: Reply(stdout="hello from guest\r\n")
    await PowerShellStep().run(ps(inline=["Write-Host 'a'", "Set-Content C:\\x.txt 'b'"]), step_ctx("PowerShell"))
    call = winrm_server.calls[-1]
    assert call.command_line.startswith(PS_PREFIX)
    assert "$ErrorActionPreference = 'Stop'" in call.script
    assert "Write-Host 'a'\nSet-Content C:\\x.txt 'b'" in call.script
    assert "exit $global:LASTEXITCODE" in call.script
    assert any(isinstance(e, LogLine) and e.line == "hello from guest" for e in events.events)


async def test_failing_script_fails_the_step_with_exit_code_and_log(winrm_server, step_ctx):
    winrm_server.handler = lambda call: Reply(
        stdout="working\r\n", stderr="Cannot find path 'C:\\nope'\r\n", exit_code=1
    )
    with pytest.raises(StepError) as info:
        await PowerShellStep().run(ps(inline=["Get-Item C:\\nope"]), step_ctx("PowerShell", "install-app"))
    err = info.value
    assert err.exit_code == 1 and err.step == "install-app"
    assert "Cannot find path 'C:\\nope'" in err.log_tail
    assert "exit code 1" in str(err)


@pytest.mark.parametrize(
    ("code", "valid", "ok"), [(3010, [3010], True), (0, [3010], True), (5, [3010], False), (2, None, False)]
)
async def test_valid_exit_codes(winrm_server, step_ctx, code, valid, ok):
    winrm_server.handler = lambda call: Reply(exit_code=code)
    spec = ps(inline=["exit 1"], validExitCodes=valid) if valid else ps(inline=["exit 1"])
    if ok:
        await PowerShellStep().run(spec, step_ctx("PowerShell"))
    else:
        with pytest.raises(StepError) as info:
            await PowerShellStep().run(spec, step_ctx("PowerShell"))
        assert info.value.exit_code == code


async def test_script_uri_is_fetched_verified_uploaded_and_called(winrm_server, step_ctx, tmp_path):
    script = tmp_path / "setup.ps1"
    script.write_text("param([string]$Name = 'x')\nWrite-Output \"hi $Name\"\n")
    digest = hashlib.sha256(script.read_bytes()).hexdigest()
    await PowerShellStep().run(ps(scriptUri=script.as_uri(), sha256Checksum=digest), step_ctx("PowerShell"))
    uploaded = [k for k in winrm_server.files if k.startswith("c:\\windows\\temp\\aib-") and k.endswith(".ps1")]
    assert len(uploaded) == 1
    assert winrm_server.files[uploaded[0]] == b"\xef\xbb\xbf" + script.read_bytes()
    runner = [s for s in winrm_server.scripts() if "& 'C:\\Windows\\Temp\\aib-" in s]
    assert runner and "$ErrorActionPreference = 'Stop'" in runner[0]
    assert any(c.command_line.startswith("del /f /q") for c in winrm_server.calls)

    with pytest.raises(FetchError):
        await PowerShellStep().run(ps(scriptUri=script.as_uri(), sha256Checksum="0" * 64), step_ctx("PowerShell"))


async def test_long_inline_script_goes_through_a_file(winrm_server, step_ctx):
    lines = [f"Write-Output 'line {i:05d} {'x' * 60}'" for i in range(80)]
    assert len("\n".join(lines)) * 2 > MAX_COMMAND_LINE
    await PowerShellStep().run(ps(inline=lines), step_ctx("PowerShell"))
    assert all(len(c.command_line) <= MAX_COMMAND_LINE for c in winrm_server.calls)
    bodies = [v for k, v in winrm_server.files.items() if k.endswith(".ps1")]
    assert any(lines[-1].encode() in b for b in bodies)


@pytest.mark.parametrize("system", [False, True])
async def test_run_elevated_uses_a_scheduled_task(winrm_server, step_ctx, system):
    def handler(call):
        if call.script and call.script.startswith("# aib:elevated"):
            return Reply(stdout="task output\r\n", exit_code=4)
        return Reply()

    winrm_server.handler = handler
    spec = ps(inline=["whoami"], runElevated=True, runAsSystem=system, validExitCodes=[4])
    await PowerShellStep().run(spec, step_ctx("PowerShell"))
    runner = next(s for s in winrm_server.scripts() if s.startswith("# aib:elevated"))
    assert "Register-ScheduledTask" in runner and "-RunLevel Highest" in runner
    assert ("'NT AUTHORITY\\SYSTEM'" in runner) is system
    assert ("-LogonType S4U" in runner) is (not system)
    assert "Unregister-ScheduledTask" in runner and "LastTaskResult" in runner
    task_file = next(v for k, v in winrm_server.files.items() if k.endswith(".ps1"))
    assert b"whoami" in task_file and b"$ErrorActionPreference = 'Stop'" in task_file


def test_durations():
    assert parse_duration("5m") == 300 and parse_duration("2h") == 7200 and parse_duration("30s") == 30
    assert parse_duration("1h30m") == 5400 and parse_duration("500ms") == 0.5
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


async def test_windows_restart_waits_for_new_boot_and_check_command(winrm_server, step_ctx, monkeypatch):
    monkeypatch.setattr("aib_sdk.steps.windows.RESTART_CHECK_INTERVAL", 0.1)
    checks = []

    def handler(call):
        if call.command_line.startswith("shutdown"):
            return Reply(reboot_after=0.2, down_for=1.0)
        if call.command_line == "check-me":
            checks.append(call.boot_id)
            return Reply(exit_code=0 if len(checks) >= 2 else 1)
        return Reply()

    winrm_server.handler = handler
    first_boot = winrm_server.boot_id
    spec = WindowsRestartCustomizer.model_validate(
        {"type": "WindowsRestart", "restartCheckCommand": "check-me", "restartTimeout": "30s"}
    )
    step = step_ctx("WindowsRestart")
    await WindowsRestartStep().run(spec, step)
    shutdown = [c for c in winrm_server.calls if c.command_line.startswith("shutdown")]
    assert shutdown[0].command_line == 'shutdown /r /f /t 0 /c "packer restart"'
    assert len(checks) == 2 and all(b != first_boot for b in checks)


async def test_windows_restart_that_never_comes_back_fails_clearly(winrm_server, step_ctx):
    winrm_server.handler = lambda call: Reply(reboot_after=0.1, down_for=math.inf)
    spec = WindowsRestartCustomizer.model_validate(
        {"type": "WindowsRestart", "restartCommand": "shutdown /r /t 5", "restartTimeout": "2s"}
    )
    with pytest.raises(StepError, match="did not come back within the restart timeout of 2s"):
        await WindowsRestartStep().run(spec, step_ctx("WindowsRestart"))
    assert winrm_server.calls[1].command_line == "shutdown /r /t 5"


async def test_windows_restart_command_failure(winrm_server, step_ctx):
    winrm_server.handler = lambda call: Reply(exit_code=5, stderr="Access is denied.\r\n")
    spec = WindowsRestartCustomizer.model_validate({"type": "WindowsRestart"})
    with pytest.raises(StepError) as info:
        await WindowsRestartStep().run(spec, step_ctx("WindowsRestart"))
    assert info.value.exit_code == 5 and "Access is denied." in info.value.log_tail


async def test_windows_update_loops_with_restarts(winrm_server, step_ctx):
    rounds = iter([101, 102, 0])

    def handler(call):
        if "# aib:windows-update" in (winrm_server.task_script(call) or ""):
            return Reply(stdout="Selected: KB5000001\r\n", exit_code=next(rounds))
        if call.command_line.startswith("shutdown"):
            return Reply(reboot_after=0.2, down_for=0.5)
        return Reply()

    winrm_server.handler = handler
    spec = WindowsUpdateCustomizer.model_validate(
        {
            "type": "WindowsUpdate",
            "searchCriteria": "IsInstalled=0 and Type='Software'",
            "filters": ["exclude:$_.Title -like '*Preview*'", "include:$true"],
            "updateLimit": 20,
        }
    )
    await WindowsUpdateStep().run(spec, step_ctx("WindowsUpdate"))
    sequence = [
        "update"
        if "# aib:windows-update" in (winrm_server.task_script(c) or "")
        else "shutdown"
        if c.command_line.startswith("shutdown")
        else None
        for c in winrm_server.calls
    ]
    assert [s for s in sequence if s] == ["update", "shutdown", "update", "update"]
    script = _update_script(winrm_server)
    assert "$searchCriteria = 'IsInstalled=0 and Type=''Software'''" in script
    assert "@{ Include = $false; Test = { $_.Title -like '*Preview*' } }" in script
    assert "@{ Include = $true; Test = { $true } }" in script
    assert "$updateLimit = 20" in script
    assert "Microsoft.Update.Session" in script and "CreateUpdateInstaller" in script


async def test_windows_update_defaults_and_bad_filter(winrm_server, step_ctx):
    await WindowsUpdateStep().run(
        WindowsUpdateCustomizer.model_validate({"type": "WindowsUpdate"}), step_ctx("WindowsUpdate")
    )
    script = _update_script(winrm_server)
    assert "$searchCriteria = 'BrowseOnly=0 and IsInstalled=0'" in script
    assert "$updateLimit = 1000" in script and "Include = $true; Test = { $true }" in script
    bad = WindowsUpdateCustomizer.model_validate({"type": "WindowsUpdate", "filters": ["keep:$true"]})
    with pytest.raises(StepError, match="include:"):
        await WindowsUpdateStep().run(bad, step_ctx("WindowsUpdate"))


async def test_windows_update_failure(winrm_server, step_ctx):
    winrm_server.handler = lambda call: Reply(stderr="0x80240016\r\n", exit_code=1)
    with pytest.raises(StepError) as info:
        await WindowsUpdateStep().run(
            WindowsUpdateCustomizer.model_validate({"type": "WindowsUpdate"}), step_ctx("WindowsUpdate")
        )
    assert info.value.exit_code == 1 and "0x80240016" in info.value.log_tail


async def test_deprovision_runs_sysprep_or_the_override(winrm_server, step_ctx):
    spec = WindowsDeprovisionSpec.model_validate({"type": "WindowsDeprovision"})
    await WindowsDeprovisionStep().run(spec, step_ctx("WindowsDeprovision", "deprovision"))
    script = winrm_server.calls[-1].script
    assert "Test-Path -LiteralPath $custom" in script and "'C:\\DeprovisioningScript.ps1'" in script
    assert "Get-Content -LiteralPath $custom" in script  # the override's content is logged
    assert 'Sysprep.exe" /oobe /generalize /quiet /quit' in script and "/mode:vm" not in script
    assert "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE" in script
    assert "Panther\\unattend.xml" in script and "WindowsAzureGuestAgent" in script
    # The build's access goes before Sysprep seals the image: the token filter policy at once; the account, its
    # profile, the WinRM listeners, firewall rules and WinRM's autostart by a shutdown script running as SYSTEM.
    head = winrm_server.calls[-2].script  # the call before Sysprep/the override
    assert "# aib:remove-build-access" in head
    assert "$tp = 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System'" in head
    assert "Remove-ItemProperty $tp LocalAccountTokenFilterPolicy -EA 0\n" in head  # at once, in the session
    for removal in (
        "Remove-LocalUser $u",
        "Remove-Item WSMan:\\localhost\\Listener\\* -Recurse",
        "Remove-NetFirewallRule",
        "''aib-sdk-winrm*''",
        "Set-Service WinRM -StartupType Disabled",
        "Remove-ItemProperty $tp LocalAccountTokenFilterPolicy\r\n",  # again, in the shutdown script
        "Win32_UserProfile",
    ):
        assert removal in head, removal
    assert 'foreach ($k in "$gp\\Scripts\\Shutdown\\0", "$gp\\State\\Machine\\Scripts\\Shutdown\\0")' in head
    assert "@{Script=$f; Parameters=''}" in head and '"$k\\0" IsPowershell -Value 1 -PropertyType DWord' in head
    winrm_server.handler = lambda call: (
        Reply(stderr="Sysprep did not finish\r\n", exit_code=1)
        if "# aib:deprovision" in (call.script or "")
        else Reply()
    )
    with pytest.raises(StepError, match="Sysprep"):
        await WindowsDeprovisionStep().run(spec, step_ctx("WindowsDeprovision", "deprovision"))
