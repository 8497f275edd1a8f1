"""The SSH communicator (asyncssh), with the guest's host key pinned.

Host keys are always checked: the communicator is given the guest's public host key(s) and trusts nothing else
(asyncssh's ``known_hosts`` is built from them; it is never ``None``). With ``trust_on_first_use`` and no pinned
key, the key the guest presents first is pinned for the rest of the session (reconnects after reboots included).

Each :meth:`SshCommunicator.run` is its own SSH session. A connection lost during a command (the guest rebooted)
gives exit code -1 and the next call reconnects. Transfers use SFTP in chunks, so files of any size stream
without being loaded whole; local file I/O happens in worker threads. asyncssh is imported on first use, so
registering this class costs nothing.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import anyio

from aib_sdk.artifacts import CommandResult, OsType
from aib_sdk.communicators.lines import LineBuffer
from aib_sdk.errors import CommandTimeout, CommunicatorError
from aib_sdk.protocols import OutputHandler, ProgressHandler
from aib_sdk.runtime import cleanup_scope

if TYPE_CHECKING:
    import asyncssh

CHUNK = 1 << 20
OUTPUT_LIMIT = 1 << 20
BOOT_ID_COMMAND = "cat /proc/sys/kernel/random/boot_id"
PROBE_INTERVAL = 0.1
"""Seconds between the starts of two banner probes (well under a quarter second): the first login can follow
sshd by this much plus the SSH handshake."""
PROBE_TIMEOUT = 3.0
"""How long one probe waits for the banner: a slow sshd (OpenSSH forking and re-executing under TCG) is given this
long to answer the oldest probes."""
MAX_OPEN = 8
"""Probe connections open at once, below OpenSSH's ``MaxStartups`` (10): a slow sshd is never sent more."""
QUIET_AFTER = 0.5
"""A probe silent this long may be closed to make room for a new one (see :func:`wait_for_banner`)."""
ANSWER_WAIT = 2 * PROBE_TIMEOUT
"""How long one readiness wait lets its probes run: a shorter wait cancels probes before a slow sshd answers, and
the next wait's probes pile onto it."""


async def _banner(host: str, port: int, timeout: float) -> bool | None:
    """``True`` if an SSH server at ``host:port`` sends its identification line (``SSH-…``) within ``timeout``;
    ``False`` if something answered otherwise (refused, closed, not SSH); ``None`` if nothing answered."""
    with anyio.move_on_after(timeout):
        try:
            async with await anyio.connect_tcp(host, port) as stream:
                received = b""
                while b"\n" not in received and len(received) < 256:
                    received += await stream.receive(256)
                return received.startswith(b"SSH-")
        except (OSError, anyio.EndOfStream, anyio.BrokenResourceError):
            return False
    return None


async def wait_for_banner(host: str, port: int, timeout: float, *, interval: float = PROBE_INTERVAL) -> bool:
    """Wait until an SSH server at ``host:port`` answers with its banner; ``False`` after ``timeout`` seconds.

    A probe starts every ``interval`` seconds and they overlap, so the first login follows the server's start by
    ``interval`` plus one round trip; at most :data:`MAX_OPEN` are open. Until anything answers, the probes may be
    held by QEMU's user-mode forward, which accepts at once and keeps a connection made before the guest's network
    is up until its own SYN retry (about 3 s), while sshd may start well before that: then, with ``MAX_OPEN``
    open, the youngest probe silent for :data:`QUIET_AFTER` is closed for a new one (the oldest keep their whole
    :data:`PROBE_TIMEOUT`, what a slow sshd needs to answer them). Once something answered (the guest refused a
    probe, or an overloaded sshd dropped one), silent probes are being served and none is closed early: a slow
    OpenSSH, which forks and re-executes for each connection under TCG, is not sent more work than it can take.
    """
    found = anyio.Event()
    started: dict[anyio.CancelScope, float] = {}  # open probes, oldest first
    answered = False

    async def probe(scope: anyio.CancelScope) -> None:
        nonlocal answered
        try:
            with scope:
                banner = await _banner(host, port, PROBE_TIMEOUT)
                if banner:
                    found.set()
                elif banner is False:
                    answered = True
        finally:
            started.pop(scope, None)

    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as tg:
            while not found.is_set():
                now = anyio.current_time()
                if len(started) >= MAX_OPEN and not answered:
                    quiet = [scope for scope, at in started.items() if now - at >= QUIET_AFTER]
                    if quiet:
                        del started[quiet[-1]]
                        quiet[-1].cancel()
                if len(started) < MAX_OPEN:
                    scope = anyio.CancelScope()
                    started[scope] = now
                    tg.start_soon(probe, scope)
                with anyio.move_on_after(interval):
                    await found.wait()
            tg.cancel_scope.cancel()
    return found.is_set()


class HostKeyMismatch(CommunicatorError):
    """The guest presented a host key that is not the pinned one: the connection was refused."""


def _key_lines(keys: Sequence[str | asyncssh.SSHKey]) -> list[Any]:
    """The pinned keys as key objects or OpenSSH public key lines (known_hosts host patterns dropped), each line
    checked for shape (algorithm, base64 blob naming that algorithm) without loading asyncssh."""
    found: list[Any] = []
    for key in keys:
        if not isinstance(key, str):
            found.append(key)  # an asyncssh.SSHKey
            continue
        for line in key.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            # A known_hosts line starts with host patterns; a public key line with the algorithm.
            if len(fields) >= 3 and not fields[0].startswith(("ssh-", "ecdsa-", "sk-")):
                fields = fields[1:]
            try:
                blob = base64.b64decode(fields[1], validate=True)
                named = blob[4 : 4 + int.from_bytes(blob[:4], "big")].decode("ascii")
            except (IndexError, ValueError) as exc:
                raise CommunicatorError(f"cannot read pinned host key: {line[:80]!r}") from exc
            if named != fields[0]:
                raise CommunicatorError(f"cannot read pinned host key: {fields[0]} key holds a {named!r} blob")
            found.append(" ".join(fields))
    return found


def _public_keys(keys: Sequence[Any]) -> list[asyncssh.SSHKey]:
    import asyncssh

    found: list[asyncssh.SSHKey] = []
    for key in keys:
        if isinstance(key, asyncssh.SSHKey):
            found.append(key)
            continue
        try:
            found.append(asyncssh.import_public_key(key))
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise CommunicatorError(f"cannot read pinned host key: {exc}") from exc
    return found


class SshCommunicator:
    """A pinned-host-key SSH connection to a guest (``name = "ssh"``)."""

    name: ClassVar[str] = "ssh"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 22,
        *,
        username: str = "root",
        client_keys: Sequence[asyncssh.SSHKey | str | Path] = (),
        host_keys: Sequence[str | asyncssh.SSHKey] = (),
        trust_on_first_use: bool = False,
        os_type: OsType = "Linux",
        connect_timeout: float = 15.0,
    ) -> None:
        self.host, self.port, self.username = host, port, username
        self.os_type: OsType = os_type
        self.connect_timeout = connect_timeout
        self.trust_on_first_use = trust_on_first_use
        self.machine_alive: Callable[[], bool] | None = None
        """Set by a build host: whether the VM still runs, so waiting for a reboot ends at once when it died."""
        self.reboots = 0
        """How many reboots :meth:`wait_rebooted` saw the guest come back from."""
        self._client_keys: list[Any] = [str(k) if isinstance(k, Path) else k for k in client_keys]
        # Parsed (and asyncssh imported) on first use: a build host makes the communicator before QEMU starts.
        self._host_key_lines = _key_lines(host_keys)
        self._parsed_host_keys: list[asyncssh.SSHKey] | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = anyio.Lock()
        self.environment: dict[str, str] = {}
        """Variables exported in every command's session (e.g. the host's proxy, when the operator offers it)."""

    # Connection ---------------------------------------------------------------------------------------------

    @property
    def _host_keys(self) -> list[asyncssh.SSHKey]:
        if self._parsed_host_keys is None:
            self._parsed_host_keys = _public_keys(self._host_key_lines)
        return self._parsed_host_keys

    @_host_keys.setter
    def _host_keys(self, keys: list[asyncssh.SSHKey]) -> None:
        self._parsed_host_keys = keys

    @property
    def pinned_host_keys(self) -> list[str]:
        """The host keys this communicator accepts, in OpenSSH public-key format."""
        return [bytes(k.export_public_key("openssh")).decode().strip() for k in self._host_keys]

    async def _pin_first_key(self, timeout: float) -> None:
        import asyncssh

        try:
            with anyio.fail_after(timeout):
                key = await asyncssh.get_server_host_key(self.host, self.port)
        except TimeoutError as exc:
            raise CommunicatorError(f"no SSH host key from {self.host}:{self.port} within {timeout:.0f}s") from exc
        except (OSError, asyncssh.Error) as exc:
            raise CommunicatorError(f"cannot read the SSH host key of {self.host}:{self.port}: {exc}") from exc
        if key is None:
            raise CommunicatorError(f"{self.host}:{self.port} presented no host key")
        self._host_keys = [key]

    async def wait_answering(self, timeout: float) -> bool:
        """Whether the server sent its SSH banner within ``timeout`` (probes every 0.1 s; see
        :func:`wait_for_banner`): call before :meth:`connect` while a guest boots."""
        return await wait_for_banner(self.host, self.port, timeout)

    async def connect(self, timeout: float | None = None) -> None:
        """Open the connection now (it is otherwise opened by the first call). Idempotent."""
        import asyncssh

        async with self._lock:
            if self._conn is not None:
                return
            limit = timeout if timeout is not None else self.connect_timeout
            if not self._host_keys:
                if not self.trust_on_first_use:
                    raise CommunicatorError(
                        f"no pinned host key for {self.host}:{self.port}: refusing to connect "
                        "(give the guest's host key, or opt in to trust-on-first-use)"
                    )
                await self._pin_first_key(limit)
            try:
                with anyio.fail_after(limit):
                    self._conn = await asyncssh.connect(
                        self.host,
                        self.port,
                        username=self.username,
                        client_keys=self._client_keys,
                        known_hosts=(self._host_keys, [], []),
                        agent_path=None,
                        password=None,
                        kbdint_auth=False,
                        connect_timeout=limit,
                        login_timeout=limit,
                        keepalive_interval=15,
                        keepalive_count_max=4,
                    )
            except TimeoutError as exc:
                raise CommunicatorError(
                    f"SSH to {self.username}@{self.host}:{self.port} timed out after {limit:.0f}s"
                ) from exc
            except asyncssh.HostKeyNotVerifiable as exc:
                raise HostKeyMismatch(
                    f"the guest at {self.host}:{self.port} presented a host key that is not the pinned one; "
                    "refusing to connect"
                ) from exc
            except asyncssh.PermissionDenied as exc:
                raise CommunicatorError(
                    f"SSH login as {self.username!r} to {self.host}:{self.port} was refused: {exc.reason}"
                ) from exc
            except (OSError, asyncssh.Error) as exc:
                raise CommunicatorError(f"SSH to {self.host}:{self.port} failed: {exc}") from exc

    async def _connection(self) -> asyncssh.SSHClientConnection:
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            await self.connect()
        assert self._conn is not None
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.abort()
            self._conn = None

    async def aclose(self) -> None:
        """Close the connection (safe to call more than once)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with cleanup_scope(5):
                await conn.wait_closed()

    # Commands -----------------------------------------------------------------------------------------------

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        on_output: OutputHandler | None = None,
    ) -> CommandResult:
        """Run ``command`` in a new session, streaming its lines; -1 when the connection dropped meanwhile."""
        import asyncssh

        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in self.environment.items())
        buffers: dict[str, list[str]] = {"stdout": [], "stderr": []}
        sizes = {"stdout": 0, "stderr": 0}
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                process = await conn.create_process(exports + command, stdin=asyncssh.DEVNULL, encoding=None)
                break
            except asyncssh.ChannelOpenError as exc:
                # A reused connection the server no longer serves sessions on (e.g. after a command it was still
                # tearing down): nothing ran yet, so open a fresh connection and ask once more.
                self._drop()
                if attempt == 2:
                    raise CommunicatorError(f"cannot start a command on the guest: {exc}") from exc
            except (OSError, asyncssh.Error) as exc:
                self._drop()
                raise CommunicatorError(f"cannot start a command on the guest: {exc}") from exc

        async def pump(stream: str, reader: asyncssh.SSHReader[bytes]) -> None:
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            splitter = LineBuffer()  # linear time, bounded memory whatever the guest prints
            while True:
                try:
                    chunk = await reader.read(65536)
                except (OSError, asyncssh.Error):
                    chunk = b""
                lines = splitter.feed(decoder.decode(chunk, final=not chunk))
                if not chunk:
                    lines += splitter.flush()
                for line in lines:
                    if sizes[stream] < OUTPUT_LIMIT:
                        buffers[stream].append(line)
                        sizes[stream] += len(line) + 1
                    if on_output is not None:
                        on_output(stream, line)
                if not chunk:
                    return

        try:
            with anyio.fail_after(timeout):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pump, "stdout", process.stdout)
                    tg.start_soon(pump, "stderr", process.stderr)
                with contextlib.suppress(OSError, asyncssh.Error):
                    await process.wait_closed()
        except TimeoutError as exc:
            with contextlib.suppress(OSError, asyncssh.Error):
                process.terminate()
            process.close()
            raise CommandTimeout(f"command timed out after {timeout}s: {command[:200]}") from exc
        status = process.exit_status
        if status is None or (status == -1 and process.exit_signal is None and conn.is_closed()):
            # The channel closed without an exit status: the guest went away (rebooted or powered off).
            self._drop()
            status = -1
        elif status == -1 and process.exit_signal is not None:
            status = 128 + _signal_number(process.exit_signal[0])
        return CommandResult(status, "\n".join(buffers["stdout"]), "\n".join(buffers["stderr"]))

    # Files --------------------------------------------------------------------------------------------------

    async def upload(self, local: Path, remote: str, *, on_progress: ProgressHandler | None = None) -> None:
        """Stream ``local`` to ``remote`` over SFTP in 1 MiB chunks."""
        import aiofiles
        import asyncssh

        conn = await self._connection()
        total = (await anyio.Path(local).stat()).st_size
        done = 0
        try:
            async with (
                conn.start_sftp_client() as sftp,
                await sftp.open(remote, "wb") as dst,
                aiofiles.open(local, "rb") as src,
            ):
                while chunk := await src.read(CHUNK):
                    await dst.write(chunk)
                    done += len(chunk)
                    if on_progress is not None:
                        on_progress(done, total)
        except asyncssh.SFTPError as exc:
            raise CommunicatorError(f"upload of {local.name} to {remote} failed: {exc.reason}") from exc
        except (OSError, asyncssh.Error) as exc:
            self._drop()
            raise CommunicatorError(f"upload of {local.name} to {remote} failed: {exc}") from exc
        if on_progress is not None and total == 0:
            on_progress(0, 0)

    async def download(self, remote: str, local: Path) -> None:
        """Copy the guest file ``remote`` to ``local`` over SFTP."""
        import aiofiles
        import asyncssh

        conn = await self._connection()
        try:
            async with (
                conn.start_sftp_client() as sftp,
                await sftp.open(remote, "rb") as src,
                aiofiles.open(local, "wb") as dst,
            ):
                while data := await src.read(CHUNK):
                    assert isinstance(data, bytes)
                    await dst.write(data)
        except asyncssh.SFTPError as exc:
            raise CommunicatorError(f"download of {remote} failed: {exc.reason}") from exc
        except (OSError, asyncssh.Error) as exc:
            self._drop()
            raise CommunicatorError(f"download of {remote} failed: {exc}") from exc

    # Reboots ------------------------------------------------------------------------------------------------

    async def boot_id(self) -> str:
        """The guest's ``/proc/sys/kernel/random/boot_id``."""
        result = await self.run(BOOT_ID_COMMAND, timeout=30)
        if result.exit_code != 0 or not result.stdout.strip():
            raise CommunicatorError(f"cannot read the guest's boot id (exit code {result.exit_code})")
        return result.stdout.strip()

    async def wait_rebooted(self, previous_boot_id: str, timeout: float) -> None:
        """Reconnect until the guest answers with a boot id other than ``previous_boot_id``."""
        deadline = time.monotonic() + timeout
        self._drop()
        last_error: Exception | None = None
        while (left := deadline - time.monotonic()) > 0:
            if self.machine_alive is not None and not self.machine_alive():
                raise CommunicatorError("the build VM stopped (its process exited) instead of restarting")
            # Banner probes every 0.1 s while the guest is down, then a real login: no attempt hangs on the
            # forward of a guest that is not listening yet, and none waits a fixed second.
            if not await self.wait_answering(min(ANSWER_WAIT, left)):
                continue
            try:
                await self.connect(timeout=min(5.0, max(1.0, left)))  # short tries: a hung handshake costs little
                current = await self.boot_id()
            except HostKeyMismatch:
                raise
            except CommunicatorError as exc:
                last_error = exc
                self._drop()
                await anyio.sleep(min(PROBE_INTERVAL, max(0.0, deadline - time.monotonic())))
                continue
            if current != previous_boot_id:
                self.reboots += 1
                return
            self._drop()
            await anyio.sleep(PROBE_INTERVAL)
        raise CommunicatorError(
            f"the guest did not come back from a reboot within {timeout:.0f}s"
            + (f" (last error: {last_error})" if last_error else "")
        )


def _signal_number(name: str) -> int:
    import signal

    try:
        return int(signal.Signals[f"SIG{name}"])
    except KeyError:
        return 0
