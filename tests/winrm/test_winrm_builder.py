"""End to end: the Builder runs AIB's own Windows quickstart template against a build host whose machine is the
WinRM test server (not Windows: no Windows VM can run here), and the server sees exactly the expected commands."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import ClassVar

import anyio
import pytest

from aib_sdk.artifacts import Artifact, DiskImage
from aib_sdk.builder import Builder
from aib_sdk.communicators.winrm import WinRMCommunicator
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.options import BuildOptions
from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.protocols import VmRequest
from aib_sdk.testing.fakes import fake_plugin
from aib_sdk.testing.winrm_server import Reply, WinRMTestServer

from .conftest import PASSWORD, USER

pytestmark = pytest.mark.anyio
TEMPLATE = (  # AIB's Windows quickstart, read from the conformance corpus (aib_conformance_corpus)
    "azvmimagebuilder__deprecated__quickquickstarts__0_Creating_a_Custom_Windows_Managed_Image__helloImageTemplateWin.json"
)
RAW = "https://raw.githubusercontent.com/danielsollondon/azvmimagebuilder/master/"


class WinRMTestMachine:
    """A 'build VM' that is the WinRM test server; capture writes a small raw disk."""

    def __init__(self, server: WinRMTestServer) -> None:
        self.communicator = WinRMCommunicator(
            "127.0.0.1",
            server.port,
            username=USER,
            password=PASSWORD,
            operation_timeout=1.0,
            poll_interval=0.2,
            connect_timeout=1.0,
        )
        self.shut_down = False

    async def shutdown(self) -> None:
        self.shut_down = True

    async def capture(self, ctx: RunContext) -> Artifact:
        path = ctx.staging.work / "windows.raw"
        await anyio.Path(path).write_bytes(b"\0" * (1 << 20))
        return Artifact(
            path=path,
            format="raw",
            virtual_size=1 << 20,
            os_type="Windows",
            template_digest=ctx.template_digest,
            run_id=ctx.run_id,
            template_name=ctx.template_name,
        )

    async def keep(self) -> str:
        return "winrm test server"


class WinRMTestHost:
    name: ClassVar[str] = "winrm-test"
    server: ClassVar[WinRMTestServer]

    @classmethod
    def available(cls, config: Config) -> bool:
        return True

    def start(self, image: DiskImage, vm: VmRequest, ctx: RunContext) -> AbstractAsyncContextManager[WinRMTestMachine]:
        return self._run()

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[WinRMTestMachine]:
        machine = WinRMTestMachine(self.server)
        await machine.communicator.wait_ready(30, interval=0.2)
        try:
            yield machine
        finally:
            await machine.communicator.aclose()


class HostPlugin:
    def __init__(self, host: type[WinRMTestHost]) -> None:
        self.host = host

    @hookimpl
    def aib_register_build_hosts(self):
        return [self.host]


def _label(call) -> str:
    script = call.script or ""
    first = script.splitlines()[0] if script else ""
    if first.startswith("# aib:"):
        return first[6:]
    if "# aib:deprovision" in script:
        return "deprovision"
    if "# aib:remove-build-access" in script:
        return "remove-build-access"
    if "& 'C:\\Windows\\Temp\\aib-" in script:
        return "run uploaded script"
    if "mkdir c:\\buildActions" in script:
        return "inline settingUpMgmtAgtPath"
    if call.command_line.startswith('del /f /q "C:\\Windows\\Temp\\aib-'):
        return "del uploaded script"
    return call.command_line if not call.script else "unexpected script"


async def test_windows_quickstart_template_end_to_end(tmp_path, monkeypatch, aib_conformance_corpus):
    home = tmp_path / "home"
    monkeypatch.setenv("AIB_HOME", str(home))
    monkeypatch.setenv("AIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AIB_GALLERY_ROOT", str(tmp_path / "gallery"))
    monkeypatch.delenv("AIB_CONFIG", raising=False)
    mirror = tmp_path / "mirror"
    (mirror / "quickquickstarts/exampleArtifacts/buildArtifacts").mkdir(parents=True)
    (mirror / "testPsScript.ps1").write_text(
        "mkdir c:\\buildArtifacts\necho Azure-Image-Builder-Was-Here > c:\\buildArtifacts\\azureImageBuilder.txt\n"
    )
    index = b"<html><body>aib</body></html>\n"
    (mirror / "quickquickstarts/exampleArtifacts/buildArtifacts/index.html").write_bytes(index)

    def handler(call):
        if call.command_line.startswith("shutdown /r"):
            return Reply(reboot_after=0.2, down_for=0.6)
        return Reply(stdout="ok\r\n")

    from aib_provider_local_gallery import hooks as gallery_hooks

    async with WinRMTestServer(username=USER, password=PASSWORD, handler=handler) as server:
        host = type("Host", (WinRMTestHost,), {"server": server})
        plugins = PluginManager(
            entry_points=False, plugins=[fake_plugin(), gallery_hooks, HostPlugin(host)], disabled=()
        )
        options = BuildOptions(
            config=Config({}),
            plugins=plugins,
            build_host="winrm-test",
            source={"type": "FakeImage", "osType": "Windows"},
            uri_map={RAW: mirror.as_uri() + "/"},
            params={
                "region": "westus",
                "imgBuilderId": "id",
                "subscriptionID": "local",
                "rgName": "rg",
                "imageName": "win2019",
                "runOutputName": "winOut",
            },
            timeout=300,
        )
        result = await Builder(aib_conformance_corpus.template(TEMPLATE), options=options).run()
        assert result.run_state == "Succeeded", result.message
        assert result.run_outputs["winOut"].artifact_id == (
            "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/images/win2019"
        )

    labels = [_label(c) for c in server.calls if c.command_line != "echo aib-ready"]
    steps = [x for x in labels if x != "boot-id"]
    assert steps == [
        "upload-part",
        "upload-finish",
        "run uploaded script",
        "del uploaded script",  # CreateBuildPath (scriptUri)
        'shutdown /r /f /t 0 /c "packer restart"',
        "echo Azure-Image-Builder-Restarted-the-VM  > c:\\buildArtifacts\\azureImageBuilderRestart.txt",
        "upload-part",
        "upload-finish",  # File downloadBuildArtifacts
        "inline settingUpMgmtAgtPath",  # PowerShell inline
        "upload-part",
        "upload-finish",
        "elevated",  # WindowsUpdate as SYSTEM in a scheduled task (nothing to install)
        "remove-build-access",  # account, listener, rules, token policy: before Sysprep
        "deprovision",  # the hidden Sysprep step
    ]
    assert labels[labels.index(steps[4]) - 1] == "boot-id"  # the boot id was read before the restart
    restart = next(c for c in server.calls if c.command_line.startswith("shutdown /r"))
    assert restart.command_line == 'shutdown /r /f /t 0 /c "packer restart"'
    check = server.calls[server.calls.index(restart) + 1 :]
    check_cmd = "echo Azure-Image-Builder-Restarted-the-VM  > c:\\buildArtifacts\\azureImageBuilderRestart.txt"
    after = [c for c in check if c.command_line == check_cmd]
    assert after and after[0].boot_id != restart.boot_id  # the check ran after the reboot
    assert server.files["c:\\buildartifacts\\index.html"] == index
    update = next(t for c in server.calls if (t := server.task_script(c)) and "# aib:windows-update" in t)
    assert "$searchCriteria = 'IsInstalled=0'" in update and "$updateLimit = 20" in update
    upload = next(c.script for c in server.calls if (c.script or "").startswith("# aib:upload-finish"))
    script_sha = hashlib.sha256(b"\xef\xbb\xbf" + (mirror / "testPsScript.ps1").read_bytes()).hexdigest()
    assert f"$sha256 = '{script_sha}'" in upload
