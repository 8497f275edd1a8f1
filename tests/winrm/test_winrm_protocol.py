"""The WinRM communicator against the WinRM test server over real loopback HTTP(S)."""

from __future__ import annotations

import math
import time

import anyio
import pytest

from aib_sdk.communicators.winrm import AuthenticationError, CertificatePinError, WinRMCommunicator
from aib_sdk.errors import CommandTimeout, CommunicatorError
from aib_sdk.testing.winrm_server import Reply, WinRMTestServer

from .conftest import PASSWORD, USER

pytestmark = pytest.mark.anyio


def _comm(server: WinRMTestServer, **kw) -> WinRMCommunicator:
    kw.setdefault("operation_timeout", 1.0)
    scheme = "https" if server.tls else "http"
    return WinRMCommunicator(
        "127.0.0.1", server.port, username=USER, password=kw.pop("password", PASSWORD), scheme=scheme, **kw
    )


async def test_run_streams_output_and_exit_code():
    async def handler(call):
        call.emit("stdout", "first line\r\nsecond ")
        await anyio.sleep(0.3)
        call.emit("stderr", "warn\r\n")
        return Reply(stdout="line\r\n", exit_code=7)

    seen: list[tuple[str, str, float]] = []
    async with WinRMTestServer(username=USER, password=PASSWORD, handler=handler) as server:
        comm = _comm(server)
        start = time.monotonic()
        result = await comm.run("dir C:\\", on_output=lambda s, line: seen.append((s, line, time.monotonic() - start)))
        await comm.aclose()
    assert result.exit_code == 7
    assert result.stdout == "first line\r\nsecond line\r\n"
    assert result.stderr == "warn\r\n"
    assert [(s, line) for s, line, _ in seen] == [
        ("stdout", "first line"),
        ("stderr", "warn"),
        ("stdout", "second line"),
    ]
    assert seen[0][2] < seen[1][2] - 0.2  # the first line arrived before the command finished
    assert server.calls[0].command_line == "dir C:\\"
    assert server.actions[0:2] == ["Create", "Command"] and server.actions[-1] == "Delete"


async def test_receive_long_poll_survives_operation_timeouts(winrm_server):
    winrm_server.handler = lambda call: Reply(stdout="done", delay=2.5)
    comm = _comm(winrm_server, operation_timeout=0.5)
    result = await comm.run("slow")
    await comm.aclose()
    assert result.stdout == "done" and result.exit_code == 0
    assert winrm_server.actions.count("Receive") >= 3  # each empty poll ended in WSManFault 2150858793


async def test_command_timeout_terminates_command(winrm_server):
    winrm_server.handler = lambda call: Reply(hang=True)
    comm = _comm(winrm_server)
    with pytest.raises(CommandTimeout):
        await comm.run("ping -t 127.0.0.1", timeout=1.0)
    await comm.aclose()
    assert [code for _, code in winrm_server.signals] == ["ctrl_c", "terminate"]
    assert winrm_server.actions[-1] == "Delete"


async def test_cancel_mid_command_signals_and_deletes_shell(winrm_server):
    started = anyio.Event()

    async def handler(call):
        started.set()
        return Reply(hang=True)

    winrm_server.handler = handler
    comm = _comm(winrm_server)
    with anyio.move_on_after(5) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(comm.run, "long-running")
            await started.wait()
            await anyio.sleep(0.2)
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught
    await comm.aclose()
    assert "ctrl_c" in [code for _, code in winrm_server.signals]
    assert winrm_server.calls[0].signals[0].endswith("/signal/ctrl_c")
    assert winrm_server.actions[-1] == "Delete"


async def test_bad_credentials_are_refused(winrm_server):
    comm = _comm(winrm_server, password="wrong-password")
    with pytest.raises(AuthenticationError) as info:
        await comm.run("echo hi")
    assert "wrong-password" not in str(info.value) and "wrong-password" not in repr(comm)
    assert winrm_server.auth_failures >= 1
    assert winrm_server.calls == []
    with pytest.raises(AuthenticationError):  # wait_ready fails at once on bad credentials
        with anyio.fail_after(5):
            await comm.wait_ready(timeout=60)


async def test_reboot_is_confirmed_by_boot_id(winrm_server):
    winrm_server.handler = lambda call: Reply(reboot_after=0.3, down_for=1.5)
    comm = _comm(winrm_server)
    before = await comm.boot_id()
    assert (await comm.run("shutdown /r /t 0")).exit_code == 0
    await comm.wait_rebooted(before, timeout=20, interval=0.2)
    after = await comm.boot_id()
    await comm.aclose()
    assert after != before
    assert winrm_server.boot_id == after


async def test_reboot_that_never_comes_back_times_out(winrm_server):
    winrm_server.handler = lambda call: Reply(reboot_after=0.1, down_for=math.inf)
    comm = _comm(winrm_server, connect_timeout=1.0)
    before = await comm.boot_id()
    await comm.run("shutdown /r /t 0")
    start = time.monotonic()
    with pytest.raises(CommunicatorError, match="did not come back"):
        await comm.wait_rebooted(before, timeout=2.0, interval=0.2)
    assert time.monotonic() - start < 6
    await comm.aclose()


async def test_connection_lost_mid_command_gives_minus_one(winrm_server):
    async def handler(call):
        await anyio.sleep(0.3)
        winrm_server.reboot(down_for=0.5)
        return Reply(hang=True)

    winrm_server.handler = handler
    comm = _comm(winrm_server)
    result = await comm.run("shutdown /r /f /t 0")
    assert result.exit_code == -1
    await anyio.sleep(0.7)
    winrm_server.handler = lambda call: Reply(stdout="back")
    assert (await comm.run("echo back")).stdout == "back"  # the next call reconnects
    await comm.aclose()


async def test_wait_ready_waits_for_a_command_to_run(winrm_server):
    winrm_server.reboot(down_for=1.0)
    comm = _comm(winrm_server, connect_timeout=1.0)
    start = time.monotonic()
    await comm.wait_ready(timeout=20, interval=0.2)
    assert time.monotonic() - start >= 0.8
    assert any(c.command_line == "echo aib-ready" for c in winrm_server.calls)
    await comm.aclose()


async def test_slow_responses_still_work(winrm_server):
    winrm_server.slow = 0.2
    winrm_server.handler = lambda call: Reply(stdout="ok")
    comm = _comm(winrm_server)
    assert (await comm.run("x")).stdout == "ok"
    await comm.aclose()


async def test_dropped_response_is_a_lost_connection(winrm_server):
    comm = _comm(winrm_server)
    assert (await comm.run("echo warm")).exit_code == 0
    winrm_server.drop_next = 1  # the Create of the next shell gets no answer
    with pytest.raises(CommunicatorError, match="unreachable"):
        await comm.run("echo hi")
    assert (await comm.run("echo again")).exit_code == 0
    await comm.aclose()


async def test_ntlm_session_is_reused_and_sealed(winrm_server):
    comm = _comm(winrm_server)
    for _ in range(3):
        await comm.run("echo x")
    await comm.aclose()
    # One NTLM handshake for three commands (the server refuses unsealed NTLM traffic over HTTP with 400).
    assert len(winrm_server.calls) == 3


async def test_basic_over_http_is_refused():
    with pytest.raises(CommunicatorError, match="Basic"):
        WinRMCommunicator("127.0.0.1", 5985, username=USER, password=PASSWORD, auth="basic")


async def test_https_checks_the_certificate():
    async with WinRMTestServer(username=USER, password=PASSWORD, tls=True, basic=True) as server:
        server.handler = lambda call: Reply(stdout="tls")
        untrusted = _comm(server, connect_timeout=3.0)
        with pytest.raises(CommunicatorError):
            await untrusted.run("echo")
        assert server.calls == []
        with pytest.raises(CertificatePinError):
            await _comm(server, cert_thumbprint="00" * 32).run("echo")
        assert server.calls == []

        by_ca = _comm(server, ca_bundle=server.cert_file)
        assert (await by_ca.run("echo")).stdout == "tls"
        pinned = _comm(server, cert_thumbprint=server.thumbprint.upper())
        assert (await pinned.run("echo")).stdout == "tls"
        basic = _comm(server, cert_thumbprint=server.thumbprint, auth="basic")
        assert (await basic.run("echo")).stdout == "tls"
        with pytest.raises(AuthenticationError):
            await _comm(server, cert_thumbprint=server.thumbprint, auth="basic", password="nope").run("echo")
        for c in (by_ca, pinned, basic):
            await c.aclose()
    assert len(server.calls) == 3


async def test_is_a_registered_communicator(winrm):
    from aib_sdk.plugins.manager import PluginManager
    from aib_sdk.protocols import Communicator

    assert isinstance(winrm, Communicator)
    assert winrm.os_type == "Windows" and WinRMCommunicator.name == "winrm"
    assert PluginManager(entry_points=False).communicator("winrm") is WinRMCommunicator


async def test_wsman_fault_becomes_communicator_error(winrm_server):
    comm = _comm(winrm_server)
    winrm_server.fault_next = ("2150858843", "The maximum number of concurrent shells for this user has been exceeded.")
    with pytest.raises(CommunicatorError, match="could not create a shell: WSManFault 2150858843: The maximum"):
        await comm.run("echo hi")
    assert (await comm.run("echo aib-ready")).stdout.strip() == "aib-ready"  # the session is still usable
    await comm.aclose()
