"""A loopback SSH test server (asyncssh) for fast tests of Linux steps and SSH communicators. Not a guest.

It listens on 127.0.0.1 on a free port with a freshly generated host key, accepts one generated client key, runs
each command with ``/bin/sh -c`` in its own process on *this* machine (as the user running the tests, in ``root``,
with ``HOME`` and ``AIB_TEST_ROOT`` set to it) and serves SFTP on this machine's filesystem: point steps at paths
below ``root``. ``commands`` records every command it ran. Use :meth:`communicator` for an
:class:`SshCommunicator` pinned to its host key::

    async with LoopbackSshServer(tmp_path) as server:
        comm = server.communicator()
        result = await comm.run("echo hello")
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncssh

from aib_sdk.communicators.ssh import SshCommunicator

USER = "aib"


class LoopbackSshServer:
    """An SSH server on 127.0.0.1 that runs commands locally below ``root``."""

    def __init__(self, root: Path, *, username: str = USER) -> None:
        self.root = root
        self.username = username
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.commands: list[str] = []
        self.port = 0
        self._server: asyncssh.SSHAcceptor | None = None

    async def __aenter__(self) -> LoopbackSshServer:
        self.root.mkdir(parents=True, exist_ok=True)
        authorized = asyncssh.import_authorized_keys(self.client_key.export_public_key("openssh").decode())
        self._server = await asyncssh.create_server(
            None,
            "127.0.0.1",
            0,
            server_host_keys=[self.host_key],
            authorized_client_keys=authorized,
            process_factory=self._handle,
            encoding=None,
            sftp_factory=True,
            allow_scp=False,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def communicator(self, **kwargs: Any) -> SshCommunicator:
        """An SSH communicator for this server, pinned to its host key."""
        return SshCommunicator(
            "127.0.0.1",
            self.port,
            username=self.username,
            client_keys=[self.client_key],
            host_keys=[self.host_key.export_public_key("openssh").decode()],
            **kwargs,
        )

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or "/bin/sh"
        self.commands.append(command)
        env = {**os.environ, "HOME": str(self.root), "AIB_TEST_ROOT": str(self.root)}
        proc = await asyncio.create_subprocess_shell(
            command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.root,
            env=env,
            start_new_session=True,
        )
        assert proc.stdin and proc.stdout and proc.stderr
        feeder = asyncio.ensure_future(_feed(process.stdin, proc.stdin))
        try:
            await asyncio.gather(_pump(proc.stdout, process.stdout), _pump(proc.stderr, process.stderr))
            status = await proc.wait()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
            raise
        finally:
            feeder.cancel()
        process.exit(status if status >= 0 else 128 - status)


async def _pump(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
    while chunk := await source.read(65536):
        sink.write(chunk)
        await sink.drain()


async def _feed(source: asyncssh.SSHReader[bytes], sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    except (ConnectionError, asyncssh.Error):
        pass
    finally:
        sink.close()
