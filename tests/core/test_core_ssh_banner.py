"""Readiness probes of the SSH communicator against real TCP listeners on 127.0.0.1."""

from __future__ import annotations

import contextlib

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


@pytest.mark.parametrize("delay", [1.0, 2.5])
async def test_a_slow_server_is_found_and_not_flooded(delay: float) -> None:
    """A guest that refuses connections for 0.5 s (its network is up, sshd is not listening yet), then serves them
    slowly (OpenSSH forking and re-executing under TCG: the work is done even for a client that left) and drops one
    at once when it holds 10 (OpenSSH's MaxStartups): a banner that takes most of a probe's timeout is found, and
    once the guest answered, no probe it holds is closed to make room for another."""
    listening_at = 0.5
    begin = anyio.current_time()
    held = 0
    left = 0
    answered = False

    async def slow(stream: anyio.abc.SocketStream) -> None:
        nonlocal held, left, answered
        async with stream:
            if anyio.current_time() - begin < listening_at or held >= 10:
                return  # refused, or dropped
            held += 1
            try:
                taken = anyio.current_time()
                with anyio.move_on_after(delay):
                    try:
                        await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):  # the client closed it
                        left += not answered  # (the wait closes its other probes once one is answered)
                await anyio.sleep(max(0.0, taken + delay - anyio.current_time()))
                with contextlib.suppress(anyio.BrokenResourceError):
                    await stream.send(b"SSH-2.0-slow\r\n")
                    answered = True
                await anyio.sleep(0.2)
            finally:
                held -= 1

    assert delay < ssh.PROBE_TIMEOUT
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, slow)
        assert await wait_for_banner("127.0.0.1", port, timeout=10.0)
        assert anyio.current_time() - begin < listening_at + delay + 0.5
        tg.cancel_scope.cancel()
    assert left == 0


async def test_probes_held_by_a_guest_not_yet_on_the_network_do_not_delay_the_first_answer() -> None:
    """Like QEMU's user-mode forward before the guest's network is up: every connection made in the first 2 s is
    accepted and held (longer than MAX_OPEN probes take to start); the server answers the first one made later
    within one probe interval and a round trip."""
    up_at = 2.0
    begin = anyio.current_time()

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            if anyio.current_time() - begin < up_at:
                await anyio.sleep_forever()
            await stream.send(b"SSH-2.0-test\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        assert ssh.MAX_OPEN * ssh.PROBE_INTERVAL < up_at < ssh.PROBE_TIMEOUT
        assert await wait_for_banner("127.0.0.1", port, timeout=10.0)
        late = anyio.current_time() - begin - up_at
        tg.cancel_scope.cancel()
    # Probes that stop new ones until they time out find it PROBE_TIMEOUT - up_at (1 s) late at best; the margin
    # below that is for a loaded machine.
    assert late < (ssh.PROBE_TIMEOUT - up_at) / 2, f"found {late:.2f}s after the server answered"
