"""Windows guests on the QEMU build host.

No Windows guest can run here: the QEMU side is tested with real QEMU (the Windows command line, a guest that never
answers WinRM, cleanup), and the WinRM side with the WinRM **test server** (``aib_sdk.testing.winrm_server``, not
Windows) standing in for the guest behind the forwarded port.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import ClassVar

import anyio
import pycdlib
import pytest

from aib_provider_qemu import windows
from aib_provider_qemu.host import QemuBuildHost, qemu_command
from aib_provider_qemu.machine import QemuMachine
from aib_provider_qemu.settings import QemuSettings
from aib_sdk.artifacts import DiskImage
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.context import RunContext, StepContext
from aib_sdk.errors import BuildHostError, UsageError
from aib_sdk.events import Event
from aib_sdk.models.specs import PowerShellCustomizer, WindowsRestartCustomizer
from aib_sdk.options import BuildOptions
from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.protocols import VmRequest
from aib_sdk.steps.windows import PowerShellStep, WindowsRestartStep
from aib_sdk.testing.corpus import Corpus
from aib_sdk.testing.fakes import fake_plugin, make_run_context
from aib_sdk.testing.winrm_server import CommandCall, Reply, WinRMTestServer

USER = "aib"


def windows_image(tmp_path: Path, **kw: object) -> DiskImage:
    fields: dict[str, object] = {
        "path": tmp_path / "win.qcow2",
        "format": "qcow2",
        "os_type": "Windows",
        "disk_interface": "ide",
    }
    fields.update(kw)
    return DiskImage(**fields)  # type: ignore[arg-type]


def command_for(tmp_path: Path, image: DiskImage, **kw: object) -> list[str]:
    return qemu_command(
        binary="qemu-system-x86_64",
        accel="tcg",
        cpus=2,
        memory_mib=2048,
        image=image,
        overlay=tmp_path / "o.qcow2",
        data_disks=[],
        seed_iso=tmp_path / "seed.iso",
        serial_log=tmp_path / "serial.log",
        qmp_socket=tmp_path / "q.sock",
        pidfile=tmp_path / "pid",
        port=45985,
        name="t",
        **kw,  # type: ignore[arg-type]
    )


def read_iso(path: Path) -> tuple[str, dict[str, str]]:
    """The volume label and the Joliet files of an ISO (as Windows reads a CD-ROM)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files = {}
        for name in ("user_data", "meta_data.json"):
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, joliet_path=f"/openstack/latest/{name}")
            files[name] = buf.getvalue().decode()
        return label, files
    finally:
        iso.close()


def ps_tokens_balance(script: str) -> None:
    """A small PowerShell lexer check: quotes close on their line (``''`` escapes) and braces/parens balance."""
    depth = {"{": 0, "(": 0}
    closing = {"}": "{", ")": "("}
    for line in script.splitlines():
        i, quote = 0, None
        while i < len(line):
            ch = line[i]
            if quote:
                if ch == quote and line[i + 1 : i + 2] == quote and quote == "'":
                    i += 2
                    continue
                if ch == quote:
                    quote = None
            elif ch == "#":
                break
            elif ch in "'\"":
                quote = ch
            elif ch in depth:
                depth[ch] += 1
            elif ch in closing:
                depth[closing[ch]] -= 1
                assert depth[closing[ch]] >= 0, line
            i += 1
        assert quote is None, f"unterminated string: {line}"
    assert depth == {"{": 0, "(": 0}


# command line -------------------------------------------------------------------------------------------------


def test_windows_command_line_forwards_winrm_on_loopback_with_an_e1000(tmp_path: Path) -> None:
    args = command_for(tmp_path, windows_image(tmp_path))
    joined = " ".join(args)
    assert "user,model=e1000,hostfwd=tcp:127.0.0.1:45985-:5985" in joined
    assert ":22" not in joined and "virtio-net" not in joined
    assert args[args.index("-rtc") + 1].startswith("base=localtime")
    assert args[args.index("-machine") + 1] == "q35"
    # the seed is a CD-ROM on the AHCI controller (no driver needed), the OS disk an AHCI disk
    assert f"file={tmp_path / 'seed.iso'},format=raw,media=cdrom,readonly=on" in joined
    assert "ide-cd,drive=seed,bus=ide.1" in joined and "ide-hd,drive=os,bus=ide.0" in joined


def test_windows_command_line_https_port_and_nic_override(tmp_path: Path) -> None:
    args = command_for(tmp_path, windows_image(tmp_path), guest_port=5986, nic_model="virtio-net-pci")
    assert "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:45985-:5986" in " ".join(args)


def test_linux_command_line_is_unchanged(tmp_path: Path) -> None:
    args = command_for(tmp_path, windows_image(tmp_path, os_type="Linux", disk_interface="virtio"))
    joined = " ".join(args)
    assert "model=virtio-net-pci,hostfwd=tcp:127.0.0.1:45985-:22" in joined
    assert "-rtc" not in args and "media=cdrom" not in joined


# credentials and the seed --------------------------------------------------------------------------------------


def test_generated_passwords_are_strong_and_quote_free() -> None:
    seen = {windows.generate_password() for _ in range(200)}
    assert len(seen) == 200
    for pw in seen:
        assert len(pw) == 24
        assert re.search(r"[A-Z]", pw) and re.search(r"[a-z]", pw) and re.search(r"\d", pw)
        assert re.search(r"[^A-Za-z0-9]", pw)
        assert not set(pw) & set("'\"`$\\%^&|<>: ")
    with pytest.raises(ValueError):
        windows.generate_password(8)


def test_usernames_that_could_inject_are_refused() -> None:
    assert windows.check_username("aib") == "aib"
    for bad in ["a'b", "x; Remove-Item C:\\", "", "a" * 21, "-lead", "a b"]:
        with pytest.raises(BuildHostError):
            windows.check_username(bad)


@pytest.mark.anyio
async def test_seed_is_a_cloudbase_init_config_drive_holding_the_script(tmp_path: Path) -> None:
    password = windows.generate_password()
    path = tmp_path / "seed.iso"
    await windows.write_seed(path, user=USER, password=password, instance_id="aib-run1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    label, files = read_iso(path)
    assert label == "config-2"  # cloudbase-init's ConfigDriveService looks for this label
    meta = json.loads(files["meta_data.json"])
    assert meta["uuid"] == "aib-run1" and meta["hostname"] == "aib-build"
    script = files["user_data"]
    assert script.startswith("#ps1_sysnative\r\n")
    ps_tokens_balance(script)
    assert script.count(password) == 1
    assert f"ConvertTo-SecureString '{password}' -AsPlainText" in script
    assert "$user = 'aib'" in script and "New-LocalUser -Name $user" in script
    assert "Set-LocalUser -Name $user -Password $password" in script  # an image that already has the user
    assert "Add-LocalGroupMember -SID 'S-1-5-32-544' -Member $user" in script  # Administrators, any language
    assert "Enable-PSRemoting" in script
    assert "WSMan:\\localhost\\Service\\AllowUnencrypted -Value $false" in script
    assert "WSMan:\\localhost\\Service\\Auth\\Basic -Value $false" in script
    assert "-Protocol TCP -LocalPort 5985 -Action Allow" in script


def test_user_data_escapes_a_quote_in_a_password() -> None:
    script = windows.user_data(USER, "ab'cd-EF12!")
    assert "ConvertTo-SecureString 'ab''cd-EF12!'" in script
    ps_tokens_balance(script)


# settings -----------------------------------------------------------------------------------------------------


def test_winrm_settings_from_the_environment(tmp_path: Path) -> None:
    env = {
        "AIB_QEMU_WINRM_USER": "Administrator",
        "AIB_QEMU_WINRM_PASSWORD": "Pa55-word-secret",
        "AIB_QEMU_WINRM_TRANSPORT": "Basic-HTTPS",
        "AIB_QEMU_WINRM_CERT_THUMBPRINT": "ab" * 32,
        "AIB_QEMU_WINRM_PASSWORD_FILE": str(tmp_path / "pw"),
        "AIB_QEMU_WINDOWS_BUILD_USER": "builder",
        "AIB_QEMU_WINDOWS_NIC_MODEL": "virtio-net-pci",
        "AIB_QEMU_WINDOWS_BOOT_TIMEOUT": "90",
    }
    s = QemuSettings.from_config(Config({}, env))
    assert (s.winrm_user, s.winrm_password, s.winrm_transport) == ("Administrator", "Pa55-word-secret", "basic-https")
    assert s.winrm_cert_thumbprint == "ab" * 32 and s.winrm_password_file == tmp_path / "pw"
    assert s.windows_build_user == "builder" and s.windows_nic_model == "virtio-net-pci"
    assert s.windows_boot_timeout == 90.0
    assert "Pa55-word-secret" not in repr(s)
    defaults = QemuSettings.from_config(Config({}, {}))
    assert (defaults.windows_build_user, defaults.winrm_transport) == ("aib", "ntlm")
    assert defaults.windows_nic_model == "e1000" and defaults.windows_boot_timeout == 1800.0
    with pytest.raises(UsageError, match="winrm_transport"):
        QemuSettings.from_config(Config({"qemu": {"winrm_transport": "basic"}}, {}))
    with pytest.raises(UsageError, match="windows_nic_model"):
        QemuSettings.from_config(Config({"qemu": {"windows_nic_model": "e1000,hostfwd=tcp::1-:2"}}, {}))


@pytest.mark.anyio
async def test_static_access_reads_the_password_file_and_demands_a_pin(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("From-A-File-42\n")
    s = QemuSettings(winrm_user="Administrator", winrm_password_file=pw)
    access = await windows.static_access(s)
    assert (access.username, access.password, access.guest_port, access.generated) == (
        "Administrator",
        "From-A-File-42",
        5985,
        False,
    )
    assert "From-A-File-42" not in repr(access)
    with pytest.raises(BuildHostError, match="AIB_QEMU_WINRM_USER"):
        await windows.static_access(QemuSettings())
    with pytest.raises(BuildHostError, match="winrm_cert_thumbprint"):
        await windows.static_access(QemuSettings(winrm_user="a", winrm_password="x", winrm_transport="basic-https"))
    https = await windows.static_access(
        QemuSettings(winrm_user="a", winrm_password="x", winrm_transport="basic-https", winrm_cert_thumbprint="ab")
    )
    assert https.guest_port == 5986
    comm = windows.communicator(https, 40000)
    assert comm.endpoint.url == "https://127.0.0.1:40000/wsman" and comm.endpoint.auth == "basic"


# the communicator and machine against the WinRM test server -----------------------------------------------------


@pytest.fixture
def access() -> windows.WinRMAccess:
    return windows.seeded_access(QemuSettings())


@pytest.fixture
async def server(access: windows.WinRMAccess):  # type: ignore[no-untyped-def]
    async with WinRMTestServer(username=access.username, password=access.password) as s:
        yield s


@pytest.fixture
def sleeper():  # type: ignore[no-untyped-def]
    """A real process standing in for QEMU's pid (the machine watches it to know whether the 'VM' runs)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def machine_for(tmp_path: Path, access: windows.WinRMAccess, port: int, pid: int, **kw: object) -> QemuMachine:
    ctx = make_run_context(tmp_path, **kw)  # type: ignore[arg-type]
    directory = ctx.staging.work / "vm-test"
    directory.mkdir()
    sockets = tmp_path / "sock"
    sockets.mkdir()
    comm = windows.communicator(access, port, connect_timeout=5.0, operation_timeout=2.0, poll_interval=0.2)
    return QemuMachine(
        image=windows_image(tmp_path),
        ctx=ctx,
        settings=QemuSettings(shutdown_timeout=10),
        directory=directory,
        socket_dir=sockets,
        overlay=directory / "os-disk.qcow2",
        communicator=comm,
        pid=pid,
        port=port,
        winrm=access,
    )


@pytest.mark.anyio
async def test_powershell_and_windows_restart_through_the_machine_communicator(
    tmp_path: Path, access: windows.WinRMAccess, server: WinRMTestServer, sleeper: subprocess.Popen[bytes]
) -> None:
    def handler(call: CommandCall) -> Reply:
        if call.command_line.startswith("shutdown /r"):
            return Reply(reboot_after=0.2, down_for=0.5)
        if call.script and "Write-Output 'hello from the build'" in call.script:
            return Reply(stdout="hello from the build\r\n")
        return Reply()

    server.handler = handler
    events: list[Event] = []
    machine = machine_for(tmp_path, access, server.port, sleeper.pid, emit=events.append)
    await machine.wait_ready(20)
    comm = machine.communicator
    step = StepContext(run=machine.ctx, communicator=comm, phase="customize", index=0, name="ps", type="PowerShell")
    inline = ["Write-Output 'hello from the build'"]
    spec = PowerShellCustomizer.model_validate({"type": "PowerShell", "inline": inline})
    await PowerShellStep().run(spec, step)
    assert any("Write-Output 'hello from the build'" in s for s in server.scripts())
    first_boot = server.boot_id
    restart = WindowsRestartCustomizer.model_validate({"type": "WindowsRestart", "restartTimeout": "30s"})
    step = dataclasses.replace(step, name="restart", type="WindowsRestart", index=1)
    await WindowsRestartStep().run(restart, step)
    assert server.boot_id != first_boot
    assert any(c.command_line.startswith("shutdown /r") for c in server.calls)
    assert access.password not in repr(comm) and all(access.password not in repr(e) for e in events)
    await comm.aclose()


@pytest.mark.anyio
async def test_windows_shutdown_runs_shutdown_s_through_winrm(
    tmp_path: Path, access: windows.WinRMAccess, server: WinRMTestServer, sleeper: subprocess.Popen[bytes]
) -> None:
    def handler(call: CommandCall) -> Reply:
        if call.command_line == "shutdown /s /t 0 /f":
            sleeper.send_signal(signal.SIGTERM)  # the 'VM' powers off
        return Reply()

    server.handler = handler
    events: list[Event] = []
    machine = machine_for(tmp_path, access, server.port, sleeper.pid, emit=events.append)
    with anyio.fail_after(30):
        await machine.shutdown()
    sleeper.wait()
    assert machine.stopped and not machine.alive()
    assert [c.command_line for c in server.calls] == ["shutdown /s /t 0 /f"], events
    assert not any("ACPI" in repr(e) for e in events)  # no QMP fallback was needed


@pytest.mark.anyio
async def test_wrong_credentials_fail_at_once_without_the_password(
    tmp_path: Path, access: windows.WinRMAccess, sleeper: subprocess.Popen[bytes]
) -> None:
    async with WinRMTestServer(username=access.username, password="Another-Pa55word") as server:
        machine = machine_for(tmp_path, access, server.port, sleeper.pid)
        with anyio.fail_after(15), pytest.raises(BuildHostError, match="refused the build credentials") as info:
            await machine.wait_ready(60)
        assert access.password not in str(info.value)
        await machine.communicator.aclose()


@pytest.mark.anyio
async def test_a_vm_that_exits_stops_the_wait(tmp_path: Path, access: windows.WinRMAccess) -> None:
    proc = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    machine = machine_for(tmp_path, access, 9, int(proc.stdout))  # nothing listens on port 9
    with anyio.fail_after(10), pytest.raises(BuildHostError, match="QEMU exited"):
        await machine.wait_ready(60)


@pytest.mark.anyio
async def test_keep_stores_a_generated_password_in_a_private_file(
    tmp_path: Path, access: windows.WinRMAccess, sleeper: subprocess.Popen[bytes]
) -> None:
    machine = machine_for(tmp_path, access, 45985, sleeper.pid)
    text = await machine.keep()
    assert access.password not in text
    secret = machine.directory / windows.PASSWORD_FILE
    assert machine.directory.parent == machine.ctx.staging.run_directory
    assert "http://127.0.0.1:45985/wsman" in text and "user aib" in text and str(secret) in text
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_text().strip() == access.password
    static = dataclasses.replace(access, generated=False)
    other = machine_for(tmp_path / "b", static, 45986, sleeper.pid)
    assert "winrm_password" in await other.keep() and not (other.directory / windows.PASSWORD_FILE).exists()


# real QEMU: the Windows boot path up to readiness ---------------------------------------------------------------


def qemu_pids(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmd and b"qemu-system" in cmd:
                found.append(int(entry.name))
    return found


@pytest.mark.anyio
async def test_real_qemu_windows_boot_hides_the_password_and_cleans_up(tmp_path: Path) -> None:
    disk = tmp_path / "blank.qcow2"
    await anyio.run_process(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"])
    env = {**os.environ, "AIB_QEMU_WINDOWS_BOOT_TIMEOUT": "8", "AIB_QEMU_ACCEL": "tcg", "AIB_QEMU_MEMORY_MIB": "256"}
    env["AIB_HOME"] = str(tmp_path / "home")
    ctx = make_run_context(tmp_path, config=Config({}, env))
    seen: dict[str, object] = {}
    events: list[Event] = []
    ctx.emit = events.append

    async def inspect() -> None:
        while not (pids := qemu_pids(str(ctx.staging.work))):  # noqa: ASYNC110 - polling the process table
            await anyio.sleep(0.1)
        argv = Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")
        seed = next(ctx.staging.work.glob("vm-*/seed.iso"))
        seen["mode"] = stat.S_IMODE(seed.stat().st_mode)
        _, files = read_iso(seed)
        password = re.search(r"ConvertTo-SecureString '([^']+)'", files["user_data"])
        assert password is not None
        seen["password"] = password.group(1)
        seen["argv"] = [a.decode() for a in argv]

    image = DiskImage(path=disk, format="qcow2", os_type="Windows", disk_interface="ide")
    error: BuildHostError | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(inspect)
        try:
            async with QemuBuildHost().start(image, VmRequest(vm_size="Standard_D2s_v3"), ctx):
                pytest.fail("no Windows here: the machine should never be ready")
        except BuildHostError as exc:
            error = exc
        tg.cancel_scope.cancel()
    assert error is not None and "WinRM within 8s" in str(error)
    password = str(seen["password"])
    argv = " ".join(seen["argv"])  # type: ignore[arg-type]
    assert re.search(r"hostfwd=tcp:127\.0\.0\.1:\d+-:5985", argv) and "model=e1000" in argv
    assert password not in argv and password not in str(error)
    assert all(password not in repr(e) for e in events)
    assert seen["mode"] == 0o600
    assert not qemu_pids(str(ctx.staging.work))
    assert list(ctx.staging.work.iterdir()) == []  # the seed (and its password) is gone


# a full Builder run: the conformance template through a QemuMachine whose guest is the WinRM test server ----------

WINDOWS_QUICKSTART = (  # read from the conformance corpus (aib_conformance_corpus)
    "azvmimagebuilder__quickquickstarts__0_Creating_a_Custom_Windows_Managed_Image__helloImageTemplateWin.json"
)
RAW = "https://raw.githubusercontent.com/danielsollondon/azvmimagebuilder/master/"


class TestServerWindowsHost:
    """A test-only build host: a real :class:`QemuMachine` (Windows access, readiness, shutdown, capture) whose
    'guest' is the WinRM test server and whose 'QEMU' is a sleeping process the guest's ``shutdown /s`` ends."""

    name: ClassVar[str] = "qemu-winrm-test"
    server: ClassVar[WinRMTestServer]
    access: ClassVar[windows.WinRMAccess]
    machines: ClassVar[list[QemuMachine]]

    @classmethod
    def available(cls, config: Config) -> bool:
        return True

    def start(self, image: DiskImage, vm: VmRequest, ctx: RunContext) -> AbstractAsyncContextManager[QemuMachine]:
        return self._run(image, ctx)

    @asynccontextmanager
    async def _run(self, image: DiskImage, ctx: RunContext) -> AsyncIterator[QemuMachine]:
        directory = ctx.staging.work / "vm-test"
        await anyio.Path(directory).mkdir()
        overlay = directory / "os-disk.qcow2"
        await anyio.run_process(["qemu-img", "create", "-q", "-f", "qcow2", str(overlay), "64M"])
        async with await anyio.open_process([sys.executable, "-c", "import time; time.sleep(300)"]) as vm_process:
            comm = windows.communicator(self.access, self.server.port, operation_timeout=2, poll_interval=0.2)
            machine = QemuMachine(
                image=image,
                ctx=ctx,
                settings=QemuSettings(shutdown_timeout=20),
                directory=directory,
                socket_dir=directory,
                overlay=overlay,
                communicator=comm,
                pid=vm_process.pid,
                port=self.server.port,
                winrm=self.access,
            )
            self.machines.append(machine)

            def handler(call: CommandCall) -> Reply:
                if call.command_line.startswith("shutdown /r"):
                    return Reply(reboot_after=0.2, down_for=0.6)
                if call.command_line == windows.DEFAULT_POWEROFF:
                    vm_process.terminate()
                return Reply(stdout="ok\r\n")

            self.server.handler = handler
            try:
                await machine.wait_ready(30)
                yield machine
            finally:
                await machine.communicator.aclose()
                if vm_process.returncode is None:
                    vm_process.kill()


@pytest.mark.anyio
async def test_conformance_windows_template_builds_through_a_qemu_machine(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    access: windows.WinRMAccess,
    server: WinRMTestServer,
    aib_conformance_corpus: Corpus,
) -> None:
    from aib_provider_local_gallery import hooks as gallery_hooks

    monkeypatch.setenv("AIB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AIB_GALLERY_ROOT", str(tmp_path / "gallery"))
    monkeypatch.delenv("AIB_CONFIG", raising=False)
    mirror = tmp_path / "mirror"
    (mirror / "quickquickstarts/exampleArtifacts/buildArtifacts").mkdir(parents=True)
    (mirror / "testPsScript.ps1").write_text("mkdir c:\\buildArtifacts\n")
    (mirror / "quickquickstarts/exampleArtifacts/buildArtifacts/index.html").write_bytes(b"<html>aib</html>\n")
    machines: list[QemuMachine] = []
    host = type("Host", (TestServerWindowsHost,), {"server": server, "access": access, "machines": machines})

    class HostPlugin:
        @hookimpl
        def aib_register_build_hosts(self) -> list[type[TestServerWindowsHost]]:
            return [host]

    events: list[Event] = []
    options = BuildOptions(
        config=Config({}),
        plugins=PluginManager(entry_points=False, plugins=[fake_plugin(), gallery_hooks, HostPlugin()], disabled=()),
        build_host="qemu-winrm-test",
        source={"type": "FakeImage", "osType": "Windows"},
        uri_map={RAW: mirror.as_uri() + "/"},
        params={
            "region": "westus",
            "imgBuilderId": "id",
            "subscriptionID": "local",
            "rgName": "rg",
            "imageName": "win2022",
            "runOutputName": "winOut",
        },
        timeout=300,
        on_event=events.append,
    )
    result = await Builder(aib_conformance_corpus.template(WINDOWS_QUICKSTART), options=options).run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    artifact_id = result.run_outputs["winOut"].artifact_id or ""
    assert artifact_id.endswith("/providers/Microsoft.Compute/images/win2022")
    (machine,) = machines
    assert machine.stopped and not machine.alive()
    lines = [c.command_line for c in server.calls]
    assert lines[-1] == "shutdown /s /t 0 /f"  # after the Sysprep deprovisioning, the power-off over WinRM
    assert any("# aib:deprovision" in (c.script or "") for c in server.calls[:-1])
    assert any(line.startswith("shutdown /r") for line in lines)
    assert all(access.password not in repr(e) for e in events)
