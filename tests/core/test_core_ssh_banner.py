"""Readiness probes of the SSH communicator against real TCP listeners on 127.0.0.1."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from aib_sdk.communicators import ssh
from aib_sdk.communicators.ssh import SshCommunicator, wait_for_banner

pytestmark = pytest.mark.anyio


async def test_a_connection_held_without_banner_does_not_hide_the_server() -> None:
    """Like QEMU's user-mode forward before the guest listens: the first connection is accepted and then held."""
    held: list[anyio.abc.SocketStream] = []

    async def serve(stream: anyio.abc.SocketStream) -> None:
        if not held:
            held.append(stream)  # accepted, never answered, never closed
            await anyio.sleep_forever()
        async with stream:
            await stream.send(b"SSH-2.0-test\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        # One probe waits up to PROBE_TIMEOUT for its banner; overlapping probes find the server well before that.
        assert ssh.PROBE_TIMEOUT > 2.0
        assert await wait_for_banner("127.0.0.1", port, timeout=2.0)
        assert held, "the first probe was held"
        tg.cancel_scope.cancel()


async def test_no_server_and_a_non_ssh_server_are_not_ready() -> None:
    async def http(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, http)
        assert not await wait_for_banner("127.0.0.1", port, timeout=0.8)
        tg.cancel_scope.cancel()
    # The listener is closed now: nothing answers on that port.
    comm = SshCommunicator("127.0.0.1", port, host_keys=[], trust_on_first_use=True)
    assert not await comm.wait_answering(0.6)


async def test_probes_in_flight_are_bounded_so_a_slow_server_is_not_flooded() -> None:
    """A server slow to send its banner (OpenSSH re-executing under TCG) sees at most MAX_PROBES connections."""
    open_now = 0
    most = 0

    async def slow(stream: anyio.abc.SocketStream) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            async with stream:
                await anyio.sleep(1.0)
                await stream.send(b"SSH-2.0-slow\r\n")
                await anyio.sleep(0.2)
        finally:
            open_now -= 1

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, slow)
        assert await wait_for_banner("127.0.0.1", port, timeout=10.0)
        tg.cancel_scope.cancel()
    assert 1 <= most <= ssh.MAX_PROBES
