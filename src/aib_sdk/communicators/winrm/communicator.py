"""The WinRM communicator: commands in ``cmd`` shells, file transfer through PowerShell, reboots by boot id."""

from __future__ import annotations

import base64
import codecs
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar, Literal

import anyio

from aib_sdk.artifacts import CommandResult, OsType
from aib_sdk.communicators.lines import LineBuffer
from aib_sdk.communicators.winrm import scripts, soap
from aib_sdk.communicators.winrm.session import AuthenticationError, ConnectionLost, Endpoint, Session
from aib_sdk.communicators.winrm.shell import Shell
from aib_sdk.disks import sha256_file
from aib_sdk.errors import CommandTimeout, CommunicatorError
from aib_sdk.protocols import OutputHandler, ProgressHandler

OUTPUT_LIMIT = 1 << 20
CLEANUP_TIMEOUT = 10.0
MIN_CHUNKS_PER_SHELL = 4
NAIVE_CHUNK = 6000
"""Raw bytes per ``echo`` in the one-chunk-per-command upload (8000 base64 characters, under cmd's limit)."""


class _Lines:
    """Decodes one output stream incrementally and hands out whole lines."""

    def __init__(self, stream: str, handler: OutputHandler | None) -> None:
        self.stream, self.handler = stream, handler
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.splitter = LineBuffer()  # linear time, bounded memory whatever the guest prints
        self.text: list[str] = []
        self.size = 0

    def feed(self, data: bytes, final: bool = False) -> None:
        chunk = self.decoder.decode(data, final)
        if self.size < OUTPUT_LIMIT:
            self.text.append(chunk)
            self.size += len(chunk)
        lines = self.splitter.feed(chunk)
        if final:
            lines += self.splitter.flush()
        if self.handler is not None:
            for line in lines:
                self.handler(self.stream, line)

    def value(self) -> str:
        return "".join(self.text)


class WinRMCommunicator:
    """A WinRM connection to a Windows guest (``name = "winrm"``).

    NTLM with message encryption over HTTP (5985), or Basic/NTLM over HTTPS (5986) with the certificate checked
    against a CA bundle, the system store, or a pinned sha256 thumbprint.
    """

    name: ClassVar[str] = "winrm"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5985,
        *,
        username: str,
        password: str,
        scheme: Literal["http", "https"] = "http",
        auth: Literal["ntlm", "basic"] = "ntlm",
        ca_bundle: Path | None = None,
        cert_thumbprint: str | None = None,
        path: str = "/wsman",
        max_envelope_size: int = 153600,
        operation_timeout: float = 20.0,
        connect_timeout: float = 15.0,
        upload_parallel: int = 3,
        poll_interval: float = 2.0,
        os_type: OsType = "Windows",
    ) -> None:
        self.endpoint = Endpoint(
            host=host,
            port=port,
            scheme=scheme,
            username=username,
            password=password,
            auth=auth,
            path=path,
            ca_bundle=ca_bundle,
            cert_thumbprint=cert_thumbprint,
            connect_timeout=connect_timeout,
        )
        if auth == "basic" and scheme != "https":
            raise CommunicatorError("Basic authentication is refused over plain HTTP; use HTTPS or NTLM")
        self.os_type: OsType = os_type
        self.max_envelope_size = max_envelope_size
        self.operation_timeout = operation_timeout
        self.upload_parallel = max(1, upload_parallel)
        self.poll_interval = poll_interval
        self._idle: list[Session] = []

    def __repr__(self) -> str:
        return f"WinRMCommunicator({self.endpoint!r})"

    # sessions -----------------------------------------------------------------------------------------------

    def _new_session(self) -> Session:
        return Session(self.endpoint, self.operation_timeout + 30.0)

    def _session(self) -> Session:
        return self._idle.pop() if self._idle else self._new_session()

    async def _release(self, session: Session, healthy: bool) -> None:
        if healthy and len(self._idle) < 8:
            self._idle.append(session)
        else:
            await session.aclose()

    def _shell(self, session: Session) -> Shell:
        return Shell(session, max_envelope_size=self.max_envelope_size, operation_timeout=self.operation_timeout)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            await session.aclose()

    # commands -----------------------------------------------------------------------------------------------

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        on_output: OutputHandler | None = None,
    ) -> CommandResult:
        """Run ``command`` (a cmd.exe command line) in a new shell; see :meth:`Communicator.run`."""
        out, err = _Lines("stdout", on_output), _Lines("stderr", on_output)

        def on_chunk(stream: str, data: bytes) -> None:
            (err if stream == "stderr" else out).feed(data)

        code = await self._execute(command, on_chunk, timeout=timeout)
        out.feed(b"", final=True)
        err.feed(b"", final=True)
        return CommandResult(exit_code=code, stdout=out.value(), stderr=err.value())

    async def _execute(
        self,
        command: str,
        on_chunk: Callable[[str, bytes], None],
        *,
        timeout: float | None = None,
        stdin: Callable[[Shell, str], Awaitable[None]] | None = None,
        console_stdin: bool = True,
    ) -> int:
        session = self._session()
        shell = self._shell(session)
        command_id: str | None = None
        finished = lost = False
        try:
            try:
                await shell.open()
                command_id = await shell.command(command, console_stdin=console_stdin)
            except ConnectionLost as exc:
                raise CommunicatorError(f"WinRM is unreachable: {exc}") from exc
            try:
                with anyio.fail_after(timeout):
                    if stdin is not None:
                        await stdin(shell, command_id)
                    code = await shell.receive(command_id, on_chunk)
            except TimeoutError:
                raise CommandTimeout(f"command ran past its {timeout:g}s timeout and was terminated") from None
            except ConnectionLost:
                lost = True
                return -1  # the guest went away (a reboot): not an error, the next call reconnects
            finished = True
            return code
        finally:
            if lost:
                await session.aclose()  # the shell went down with the guest: nothing to clean up
            else:
                await self._cleanup(session, shell, command_id, finished)

    async def _cleanup(self, session: Session, shell: Shell, command_id: str | None, finished: bool) -> None:
        """Delete the shell; stop an unfinished command first (Ctrl-C, then terminate). Shielded and bounded."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
            if shell.shell_id is None:
                await self._release(session, healthy=finished)
                return
            if not finished:
                # The interrupted request may still be in flight: talk over a fresh connection.
                await session.aclose()
                session = self._new_session()
                shell.session = session
            try:
                if command_id is not None and not finished:
                    for code in (soap.SIGNAL_CTRL_C, soap.SIGNAL_TERMINATE):
                        await shell.signal(command_id, code)
                await shell.close()
            except CommunicatorError:
                await session.aclose()
                return
            await self._release(session, healthy=True)

    async def run_powershell(
        self, script: str, *, timeout: float | None = None, on_output: OutputHandler | None = None
    ) -> CommandResult:
        """Run a PowerShell script passed as ``-EncodedCommand`` (it must fit one command line)."""
        if not scripts.fits(script):
            raise CommunicatorError("PowerShell script too long for one command line; upload it and run the file")
        return await self.run(scripts.encode_command(script), timeout=timeout, on_output=on_output)

    # readiness and reboots -----------------------------------------------------------------------------------

    async def boot_id(self) -> str:
        """The guest's last boot time (UTC, ISO 8601): changes on every boot."""
        result = await self.run_powershell(scripts.boot_id_script(), timeout=60.0)
        value = result.stdout.strip()
        if result.exit_code != 0 or not value:
            raise CommunicatorError(f"could not read the boot id (exit code {result.exit_code})")
        return value

    async def wait_ready(self, timeout: float = 600.0, *, interval: float | None = None) -> None:
        """Wait until WinRM answers and a command runs; wrong credentials fail at once."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommunicatorError(f"WinRM at {self.endpoint.url} not ready after {timeout:g}s: {last}")
            try:
                with anyio.fail_after(min(remaining, self.operation_timeout + 10.0)):
                    result = await self.run("echo aib-ready")
                if result.exit_code == 0 and "aib-ready" in result.stdout:
                    return
                last = f"test command exited {result.exit_code}"
            except AuthenticationError:
                raise
            except (CommunicatorError, TimeoutError) as exc:
                last = str(exc) or type(exc).__name__
            await anyio.sleep(min(interval or self.poll_interval, max(0.0, deadline - time.monotonic())))

    async def wait_rebooted(self, previous_boot_id: str, timeout: float, *, interval: float | None = None) -> None:
        """Poll the boot id until it differs from ``previous_boot_id``; the port answering is not enough."""
        deadline = time.monotonic() + timeout
        last = "boot id unchanged"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommunicatorError(f"the guest did not come back from its restart within {timeout:g}s ({last})")
            try:
                with anyio.fail_after(min(remaining, 60.0)):
                    current = await self.boot_id()
                if current != previous_boot_id:
                    return
                last = "boot id unchanged"
            except AuthenticationError:
                raise
            except (CommunicatorError, TimeoutError) as exc:
                last = str(exc) or "no answer"
            await anyio.sleep(min(interval or self.poll_interval, max(0.0, deadline - time.monotonic())))

    # files --------------------------------------------------------------------------------------------------

    @property
    def chunk_size(self) -> int:
        """Raw bytes per Send: the envelope limit minus SOAP overhead, after two base64 layers (line + stream)."""
        payload = self.max_envelope_size - soap.ENVELOPE_OVERHEAD
        line_chars = payload * 3 // 4 - 2  # the Send's base64 wraps a base64 line plus CRLF
        return max(3, (line_chars * 3 // 4) // 3 * 3)

    async def upload(self, local: Path, remote: str, *, on_progress: ProgressHandler | None = None) -> None:
        """Stream ``local`` to ``remote`` in envelope-sized chunks over parallel shells; verify sha256 on the guest."""
        import aiofiles  # it imports asyncio: loaded by the first transfer, not when the class registers

        remote = _remote(remote)
        total = (await anyio.Path(local).stat()).st_size
        digest = await sha256_file(local)
        chunk = self.chunk_size
        chunks = max(1, -(-total // chunk))
        # Parallel shells hide round-trip latency (each Send waits for its answer); small files use one shell.
        parallel = max(1, min(self.upload_parallel, chunks // MIN_CHUNKS_PER_SHELL))
        bounds = [i * chunks // parallel * chunk for i in range(parallel + 1)]
        ranges = [(min(total, bounds[i]), min(total, bounds[i + 1])) for i in range(parallel)]
        tag = uuid.uuid4().hex[:8]
        parts = [f"{remote}.aib-part{i}-{tag}" for i in range(parallel)]
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if on_progress is not None:
                on_progress(done, total)

        async def send_part(index: int) -> None:
            start, end = ranges[index]

            async def feed(shell: Shell, command_id: str) -> None:
                async with aiofiles.open(local, "rb") as fh:
                    await fh.seek(start)
                    position = start
                    while position < end:
                        data = await fh.read(min(chunk, end - position))
                        position += len(data)
                        line = base64.b64encode(data) + b"\r\n"
                        await shell.send(command_id, line, end=position >= end)
                        advance(len(data))
                if start >= end:
                    await shell.send(command_id, b"", end=True)

            errors = _Lines("stderr", None)
            code = await self._execute(
                scripts.encode_command(scripts.upload_part_script(parts[index])),
                lambda s, d: errors.feed(d) if s == "stderr" else None,
                stdin=feed,
                console_stdin=False,
            )
            errors.feed(b"", final=True)
            if code != 0:
                detail = errors.value().strip()[-300:]
                raise CommunicatorError(
                    f"upload to {remote} failed writing part {index} (exit code {code})"
                    + (f": {detail}" if detail else "")
                )

        async with anyio.create_task_group() as tg:
            for i in range(parallel):
                tg.start_soon(send_part, i)
        result = await self.run_powershell(scripts.upload_finish_script(remote, parts, digest))
        if result.exit_code != 0:
            raise CommunicatorError(
                f"upload to {remote} failed its sha256 check on the guest (exit code {result.exit_code}): "
                f"{result.stderr.strip()[-300:]}"
            )

    async def upload_naive(self, local: Path, remote: str) -> None:
        """The one-chunk-per-command upload of Packer's winrmcp (``echo <base64> >> file`` in one shell): a
        baseline for the benchmark."""
        import aiofiles  # it imports asyncio: loaded by the first transfer, not when the class registers

        remote = _remote(remote)
        tmp = f"{remote}.aib-b64"
        session = self._session()
        shell = self._shell(session)
        healthy = False
        try:
            await shell.open()
            first = True
            async with aiofiles.open(local, "rb") as fh:
                while True:
                    data = await fh.read(NAIVE_CHUNK)
                    if not data and not first:
                        break
                    if data:
                        command = f'echo {base64.b64encode(data).decode()} {">" if first else ">>"} "{tmp}"'
                    else:
                        command = f'type nul > "{tmp}"'
                    first = False
                    code = await shell.receive(await shell.command(command), lambda s, d: None)
                    if code != 0:
                        raise CommunicatorError(f"naive upload to {remote} failed (exit code {code})")
                    if not data:
                        break
            await shell.close()
            healthy = True
        finally:
            await self._release(session, healthy)
        result = await self.run_powershell(scripts.naive_decode_script(tmp, remote))
        if result.exit_code != 0:
            raise CommunicatorError(f"naive upload to {remote} failed to decode (exit code {result.exit_code})")
        if result.stdout.strip().lower() != await sha256_file(local):
            raise CommunicatorError(f"naive upload to {remote}: sha256 mismatch on the guest")

    async def download(self, remote: str, local: Path) -> None:
        """Copy a guest file to ``local`` (base64 over stdout)."""
        import aiofiles  # it imports asyncio: loaded by the first transfer, not when the class registers

        remote = _remote(remote)
        result = await self.run_powershell(scripts.download_script(remote))
        if result.exit_code != 0:
            raise CommunicatorError(f"download of {remote} failed (exit code {result.exit_code})")
        data = base64.b64decode("".join(result.stdout.split()))
        async with aiofiles.open(local, "wb") as fh:
            await fh.write(data)


def _remote(path: str) -> str:
    try:
        return scripts.check_remote_path(path)
    except ValueError as exc:
        raise CommunicatorError(str(exc)) from exc
