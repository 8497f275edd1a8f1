"""The loopback SSH test server, driven by the real SshCommunicator and the real Shell/File steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from aib_sdk.context import StepContext
from aib_sdk.errors import CommunicatorError, StepError
from aib_sdk.models.specs import FileCustomizer, ShellCustomizer
from aib_sdk.steps.linux import FileStep, ShellStep
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.ssh_server import LoopbackSshServer

pytestmark = pytest.mark.anyio


async def test_commands_stream_output_and_exit_codes(tmp_path: Path) -> None:
    async with LoopbackSshServer(tmp_path / "root") as server:
        comm = server.communicator()
        lines: list[tuple[str, str]] = []
        result = await comm.run("echo out; echo err >&2; exit 3", on_output=lambda s, line: lines.append((s, line)))
        await comm.aclose()
    assert result.exit_code == 3
    assert ("stdout", "out") in lines and ("stderr", "err") in lines
    assert server.commands == ["echo out; echo err >&2; exit 3"]


async def test_sftp_round_trip(tmp_path: Path) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"x" * 100_000)
    (tmp_path / "root" / "tmp").mkdir(parents=True)
    async with LoopbackSshServer(tmp_path / "root") as server:
        comm = server.communicator()
        await comm.upload(payload, f"{server.root}/tmp/payload.bin")
        await comm.download(f"{server.root}/tmp/payload.bin", tmp_path / "back.bin")
        await comm.aclose()
    assert (tmp_path / "root" / "tmp" / "payload.bin").read_bytes() == payload.read_bytes()
    assert (tmp_path / "back.bin").read_bytes() == payload.read_bytes()


async def test_unpinned_host_key_is_refused(tmp_path: Path) -> None:
    async with LoopbackSshServer(tmp_path / "root") as server, LoopbackSshServer(tmp_path / "other") as other:
        wrong = other.communicator()
        wrong.port = server.port  # the right port, the other server's host key pinned
        with pytest.raises(CommunicatorError):
            await wrong.run("true")
        await wrong.aclose()


async def test_shell_and_file_steps_run_against_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "tmp").mkdir(parents=True)
    source = tmp_path / "motd"
    source.write_text("hello from aib\n")
    ctx = make_run_context(tmp_path / "ctx")
    async with LoopbackSshServer(root) as server:
        comm = server.communicator()
        file_spec = FileCustomizer.model_validate(
            {"type": "File", "sourceUri": source.as_uri(), "destination": f"{root}/tmp/motd"}
        )
        await FileStep().run(file_spec, StepContext(ctx, comm, "customize", 0, "motd", "File"))
        shell = ShellCustomizer.model_validate(
            {"type": "Shell", "inline": ['test "$(cat "$AIB_TEST_ROOT/tmp/motd")" = "hello from aib"', "exit 7"]}
        )
        step = StepContext(ctx, comm, "customize", 1, "check", "Shell")
        with pytest.raises(StepError) as failure:
            await ShellStep().run(shell, step)
        await comm.aclose()
    assert failure.value.exit_code == 7
    assert (root / "tmp" / "motd").read_text() == "hello from aib\n"


async def test_fixture_gives_a_running_server(aib_ssh_server: LoopbackSshServer) -> None:
    comm = aib_ssh_server.communicator()
    result = await comm.run('printf %s "$AIB_TEST_ROOT"')
    await comm.aclose()
    assert result.stdout == str(aib_ssh_server.root)


async def test_a_refused_session_on_a_reused_connection_is_retried_on_a_fresh_one(
    aib_ssh_server: LoopbackSshServer,
) -> None:
    """A server that stops serving sessions on a connection it still keeps open (as dropbear did after a command
    timed out) costs one reconnect, not the step; a refusal on the fresh connection too is reported."""
    import asyncssh

    comm = aib_ssh_server.communicator()
    await comm.connect()
    stale = comm._conn
    assert stale is not None

    async def refuse(*args: object, **kwargs: object) -> object:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "Session request failed")

    stale.create_process = refuse  # type: ignore[method-assign]
    result = await comm.run("echo fresh")
    assert result.stdout.strip() == "fresh" and comm._conn is not stale
    fresh = comm._conn
    assert fresh is not None
    fresh.create_process = refuse  # type: ignore[method-assign]
    original_connect = comm.connect

    async def connect_refusing() -> None:
        await original_connect()
        assert comm._conn is not None
        comm._conn.create_process = refuse  # type: ignore[method-assign]

    comm.connect = connect_refusing  # type: ignore[method-assign]
    with pytest.raises(CommunicatorError, match="Session request failed"):
        await comm.run("echo never")
    await comm.aclose()
