"""A WinRM **test server** — not Windows: WS-Management over real loopback HTTP(S) for testing WinRM clients.

It speaks the wire protocol a Windows WinRM service speaks — HTTP/1.1 keep-alive, a real NTLM handshake and
NTLM message sealing (``multipart/encrypted``) through pyspnego's acceptor, Basic over HTTPS, and the ``cmd`` shell
resource (Create, Command, Send, Receive with long-poll and the OperationTimeout fault, Signal, Delete) — but it
runs no Windows program. Commands go to a scriptable handler that records every command line and decoded
``-EncodedCommand`` script and returns the stdout/stderr/exit code a test chooses. It emulates only the
communicator's own guest scripts (boot id, file transfer) on an in-memory file system, and can simulate a reboot
(connections drop for a while, then the boot id changes), slow or dropped responses, bad credentials (401), and
bytes flipped in transit (``corrupt_uploads``).

NTLM acceptance reads credentials from the file named by ``NTLM_USER_FILE`` (pyspnego's rule); the server sets
that variable while it runs and restores it afterwards.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import inspect
import itertools
import os
import re
import ssl
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSListener

from aib_sdk.communicators.winrm import encryption, scripts, soap
from aib_sdk.runtime import cleanup_scope

__all__ = ["CTRL_C_EXIT", "CommandCall", "Handler", "Reply", "WinRMTestServer"]

_Q = {k: f"{{{v}}}" for k, v in soap.NS.items()}
CTRL_C_EXIT = -1073741510  # STATUS_CONTROL_C_EXIT, what a command stopped by a signal reports


@dataclass
class Reply:
    """What the handler wants a command to do.

    ``delay`` waits before finishing; ``hang`` never finishes (until signalled); ``reboot_after`` then simulates a
    reboot that many seconds after the command finished, with WinRM unreachable for ``down_for`` seconds
    (``math.inf``: it never comes back).
    """

    stdout: str | bytes = ""
    stderr: str | bytes = ""
    exit_code: int = 0
    delay: float = 0.0
    hang: bool = False
    reboot_after: float | None = None
    down_for: float = 1.0


@dataclass
class CommandCall:
    """One command the server received, as the handler and the tests see it."""

    shell_id: str
    command_id: str
    command_line: str
    script: str | None
    boot_id: str
    stdin: bytearray = field(default_factory=bytearray)
    signals: list[str] = field(default_factory=list)
    exit_code: int | None = None
    _chunks: list[tuple[str, bytes]] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)
    _stdin_closed: anyio.Event = field(default_factory=anyio.Event)
    _scope: anyio.CancelScope | None = None

    def emit(self, stream: str, data: str | bytes) -> None:
        """Make output available to the next Receive (lets a handler stream output over time)."""
        if data:
            self._chunks.append((stream, data.encode() if isinstance(data, str) else data))
            self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _finish(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code
            self._poke()

    async def read_stdin(self) -> bytes:
        """Wait until the client closed stdin; return everything it sent."""
        await self._stdin_closed.wait()
        return bytes(self.stdin)


Handler = Callable[[CommandCall], "Reply | Awaitable[Reply]"]


def _default_handler(call: CommandCall) -> Reply:
    return Reply()


@dataclass
class _Shell:
    shell_id: str
    commands: dict[str, CommandCall] = field(default_factory=dict)


def _make_certificate(directory: Path, host: str) -> tuple[Path, Path, str]:
    """A self-signed EC certificate for ``host`` (IP SAN), its key, and its sha256 thumbprint."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aib-winrm-test-server")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "winrm-cert.pem", directory / "winrm-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


class WinRMTestServer:
    """A loopback WinRM test server (see the module docstring). Use as ``async with WinRMTestServer(...) as s:``."""

    def __init__(
        self,
        *,
        username: str = "packer",
        password: str = "S3cret-Pa55",
        handler: Handler = _default_handler,
        tls: bool = False,
        basic: bool = False,
        host: str = "127.0.0.1",
        max_poll: float = 1.0,
    ) -> None:
        self.username, self.password, self.handler = username, password, handler
        self.tls, self.basic, self.host = tls, basic, host
        self.max_poll = max_poll
        self.port = 0
        self.boot_id = _new_boot_id()
        self.calls: list[CommandCall] = []
        self.actions: list[str] = []
        self.request_sizes: list[tuple[str, int]] = []
        self.signals: list[tuple[str, str]] = []
        self.files: dict[str, bytes] = {}
        self.auth_failures = 0
        self.slow = 0.0
        self.corrupt_uploads = False
        self.fault_next: tuple[str, str] | None = None  # (WSManFault code, message) for the next SOAP request
        self.drop_next = 0
        self.cert_file: Path | None = None
        self.thumbprint = ""
        self._shells: dict[str, _Shell] = {}
        self._down_until = 0.0
        self._streams: set[anyio.abc.ByteStream] = set()
        self._stack = AsyncExitStack()
        self._tg: anyio.abc.TaskGroup | None = None
        self._boots = itertools.count(1)
        self._old_env: str | None = None

    # lifecycle ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/wsman"

    async def __aenter__(self) -> WinRMTestServer:
        tmp = Path(await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="aib-winrm-")))
        self._stack.callback(_rmtree, tmp)
        users = tmp / "ntlm-users"
        await anyio.Path(users).write_text(f":{self.username}:{self.password}\n")
        self._old_env = os.environ.get("NTLM_USER_FILE")
        os.environ["NTLM_USER_FILE"] = str(users)
        self._stack.callback(self._restore_env)
        listener: anyio.abc.Listener[Any] = await anyio.create_tcp_listener(local_host=self.host, local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        if self.tls:
            cert, key, self.thumbprint = await anyio.to_thread.run_sync(_make_certificate, tmp, self.host)
            self.cert_file = cert
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            await anyio.to_thread.run_sync(ctx.load_cert_chain, cert, key)
            listener = TLSListener(listener, ctx, standard_compatible=False)
        self._stack.push_async_callback(listener.aclose)
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.push_async_callback(self._stop)
        self._tg.start_soon(listener.serve, self._serve_connection)
        return self

    async def _stop(self) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()

    def _restore_env(self) -> None:
        if self._old_env is None:
            os.environ.pop("NTLM_USER_FILE", None)
        else:
            os.environ["NTLM_USER_FILE"] = self._old_env

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    def reboot(self, down_for: float = 1.0) -> None:
        """Simulate a reboot: shells vanish, connections drop, WinRM is unreachable, then a new boot id."""
        self._down_until = time.monotonic() + down_for
        self.boot_id = f"{_new_boot_id()}#{next(self._boots)}"
        for shell in self._shells.values():
            for call in shell.commands.values():
                if call._scope is not None:
                    call._scope.cancel()
        self._shells.clear()
        for stream in list(self._streams):
            self._streams.discard(stream)
            assert self._tg is not None
            self._tg.start_soon(_close, stream)

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def task_script(self, call: CommandCall) -> str | None:
        """For a command that runs an uploaded script in a scheduled task (``# aib:elevated``), that script."""
        if not (call.script or "").startswith("# aib:elevated"):
            return None
        content = self.files.get(_key(scripts.param(call.script or "", "file") or ""))
        return content.decode("utf-8-sig") if content is not None else None

    def scripts(self) -> list[str]:
        """The decoded scripts of every ``-EncodedCommand`` received, in order."""
        return [c.script for c in self.calls if c.script is not None]

    # HTTP -----------------------------------------------------------------------------------------------

    async def _serve_connection(self, stream: anyio.abc.ByteStream) -> None:
        if self.down:
            await _close(stream)
            return
        self._streams.add(stream)
        ctx: Any = None  # this connection's NTLM context (NTLM authenticates the connection)
        authed = False
        reader = BufferedByteReceiveStream(stream)
        try:
            while True:
                try:
                    head = await reader.receive_until(b"\r\n\r\n", 65536)
                except (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound):
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.receive_exactly(length) if length else b""
                status, out_headers, out, ctx, authed = await self._handle_http(headers, body, ctx, authed)
                if status == 0:  # drop without answering
                    return
                if self.slow:
                    await anyio.sleep(self.slow)
                reason = {200: "OK", 401: "Unauthorized", 400: "Bad Request", 500: "Internal Server Error"}
                response = f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\nServer: Microsoft-HTTPAPI/2.0\r\n"
                for k, v in {**out_headers, "Content-Length": str(len(out))}.items():
                    response += f"{k}: {v}\r\n"
                await stream.send(response.encode("latin-1") + b"\r\n" + out)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, ssl.SSLError, OSError):
            return
        finally:
            self._streams.discard(stream)
            await _close(stream)

    async def _handle_http(
        self, headers: dict[str, str], body: bytes, ctx: Any, authed: bool
    ) -> tuple[int, dict[str, str], bytes, Any, bool]:
        """Answer one HTTP request: ``(status, headers, body, connection's NTLM context, authenticated)``."""
        import spnego
        import spnego.exceptions

        challenge = {"WWW-Authenticate": "Negotiate" + (', Basic realm="WSMAN"' if self.basic else "")}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic" and self.basic and self.tls:
            user, _, password = base64.b64decode(token).decode().partition(":")
            if (user, password) != (self.username, self.password):
                self.auth_failures += 1
                return 401, challenge, b"", None, False
            authed, ctx = True, None
        elif scheme.lower() in ("negotiate", "ntlm"):
            if ctx is None or ctx.complete:
                ctx = spnego.server(protocol="ntlm")
            try:
                reply = ctx.step(base64.b64decode(token))
            except spnego.exceptions.SpnegoError:
                self.auth_failures += 1
                return 401, challenge, b"", None, False
            if not ctx.complete:
                tok = base64.b64encode(reply or b"").decode()
                return 401, {"WWW-Authenticate": f"Negotiate {tok}"}, b"", ctx, False
            authed = True
            if not body:
                return 200, {}, b"", ctx, True
        elif not authed:
            return 401, challenge, b"", None, False
        sealed = headers.get("content-type", "").startswith("multipart/encrypted")
        if not self.tls and not sealed:
            return 400, {}, b"", ctx, authed  # over HTTP, NTLM traffic must be sealed (AllowUnencrypted=false)
        if sealed:
            try:
                body = encryption.unseal(ctx, body)
            except Exception:
                return 400, {}, b"", ctx, authed
        if self.drop_next > 0:
            self.drop_next -= 1
            return 0, {}, b"", ctx, authed
        status, xml = await self._handle_soap(body)
        if sealed:
            return status, {"Content-Type": encryption.CONTENT_TYPE}, encryption.seal(ctx, xml), ctx, authed
        return status, {"Content-Type": "application/soap+xml;charset=UTF-8"}, xml, ctx, authed

    # WS-Management --------------------------------------------------------------------------------------

    async def _handle_soap(self, body: bytes) -> tuple[int, bytes]:
        root = ET.fromstring(body)
        action = (root.findtext(f".//{_Q['wsa']}Action") or "").strip()
        self.actions.append(action.rsplit("/", 1)[-1])
        self.request_sizes.append((self.actions[-1], len(body)))
        shell_id = next((s.text or "" for s in root.iter(f"{_Q['wsman']}Selector") if s.get("Name") == "ShellId"), "")
        if self.fault_next is not None:
            code, message = self.fault_next
            self.fault_next = None
            return 500, _fault(code, message)
        timeout_text = root.findtext(f".//{_Q['wsman']}OperationTimeout") or "PT60S"
        match = re.match(r"PT([\d.]+)S", timeout_text)
        op_timeout = float(match.group(1)) if match else 60.0
        if action == soap.ACTION_CREATE:
            sid = str(uuid.uuid4()).upper()
            self._shells[sid] = _Shell(sid)
            return 200, _response(f"<rsp:Shell><rsp:ShellId>{sid}</rsp:ShellId></rsp:Shell>")
        shell = self._shells.get(shell_id)
        if shell is None:
            return 500, _fault(
                "2150858843",
                "The request for the Windows Remote Shell with ShellId failed "
                "because the shell was not found on the server.",
            )
        if action == soap.ACTION_DELETE:
            for running in shell.commands.values():
                if running._scope is not None:
                    running._scope.cancel()
            del self._shells[shell_id]
            return 200, _response("")
        if action == soap.ACTION_COMMAND:
            return 200, self._start_command(shell, root)
        stream = root.find(f".//{_Q['rsp']}Stream") if action == soap.ACTION_SEND else None
        node = (
            root.find(f".//{_Q['rsp']}DesiredStream")
            if action == soap.ACTION_RECEIVE
            else stream
            if stream is not None
            else root.find(f".//{_Q['rsp']}Signal")
        )
        call = shell.commands.get(node.get("CommandId", "") if node is not None else "")
        if call is None:
            return 500, _fault("2150858797", "The command was not found.")
        if action == soap.ACTION_SEND and stream is not None:
            call.stdin += base64.b64decode(stream.text or "")
            if stream.get("End") == "true":
                call._stdin_closed.set()
            return 200, _response("<rsp:SendResponse/>")
        if action == soap.ACTION_SIGNAL:
            code = (root.findtext(f".//{_Q['rsp']}Code") or "").strip()
            call.signals.append(code)
            self.signals.append((call.command_id, code.rsplit("/", 1)[-1]))
            if call._scope is not None:
                call._scope.cancel()
            call._finish(CTRL_C_EXIT)
            return 200, _response("<rsp:SignalResponse/>")
        if action == soap.ACTION_RECEIVE:
            return await self._receive(call, min(op_timeout, self.max_poll))
        return 500, _fault("2150858817", f"unsupported action {action}")

    def _start_command(self, shell: _Shell, root: ET.Element) -> bytes:
        command = (root.findtext(f".//{_Q['rsp']}Command") or "").strip()
        args = [a.text or "" for a in root.iter(f"{_Q['rsp']}Arguments")]
        line = " ".join([command, *args])
        call = CommandCall(
            shell_id=shell.shell_id,
            command_id=str(uuid.uuid4()).upper(),
            command_line=line,
            script=scripts.decode_command(line),
            boot_id=self.boot_id,
        )
        shell.commands[call.command_id] = call
        self.calls.append(call)
        assert self._tg is not None
        self._tg.start_soon(self._run_command, call)
        return _response(f"<rsp:CommandResponse><rsp:CommandId>{call.command_id}</rsp:CommandId></rsp:CommandResponse>")

    async def _receive(self, call: CommandCall, wait: float) -> tuple[int, bytes]:
        if not call._chunks and call.exit_code is None:
            with anyio.move_on_after(wait):
                await call._changed.wait()
        if not call._chunks and call.exit_code is None:
            return 500, _fault(
                soap.FAULT_OPERATION_TIMEOUT,
                "The WS-Management service cannot complete the operation within the time specified in "
                "OperationTimeout.",
                subcode="w:TimedOut",
            )
        chunks, call._chunks = call._chunks, []
        streams = "".join(
            f'<rsp:Stream Name="{name}" CommandId="{call.command_id}">{base64.b64encode(data).decode()}</rsp:Stream>'
            for name, data in chunks
        )
        if call.exit_code is not None:
            state = (
                f'<rsp:CommandState CommandId="{call.command_id}" State="{soap.STATE_DONE}">'
                f"<rsp:ExitCode>{call.exit_code}</rsp:ExitCode></rsp:CommandState>"
            )
        else:
            state = (
                f'<rsp:CommandState CommandId="{call.command_id}" '
                'State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"/>'
            )
        return 200, _response(f"<rsp:ReceiveResponse>{streams}{state}</rsp:ReceiveResponse>")

    # commands -------------------------------------------------------------------------------------------

    async def _run_command(self, call: CommandCall) -> None:
        with anyio.CancelScope() as scope:
            call._scope = scope
            reply = await self._builtin(call)
            if reply is None:
                result = self.handler(call)
                reply = await result if inspect.isawaitable(result) else result
            if reply.hang:
                await anyio.sleep_forever()
            if reply.delay:
                await anyio.sleep(reply.delay)
            call.emit("stdout", reply.stdout)
            call.emit("stderr", reply.stderr)
            if reply.reboot_after is not None:  # outlives the shell, as a real shutdown does
                assert self._tg is not None
                self._tg.start_soon(self._reboot_later, reply.reboot_after, reply.down_for)
            call._finish(reply.exit_code)

    async def _reboot_later(self, delay: float, down_for: float) -> None:
        await anyio.sleep(delay)
        self.reboot(down_for)

    async def _builtin(self, call: CommandCall) -> Reply | None:
        """Emulate the communicator's own scripts (boot id, transfers) and ``echo``; None for the handler."""
        script, line = call.script or "", call.command_line
        if script.startswith(scripts.MARK_BOOT_ID):
            return Reply(stdout=self.boot_id + "\r\n")
        if script.startswith(scripts.MARK_UPLOAD_PART):
            data = await call.read_stdin()
            path = scripts.param(script, "path") or ""
            content = b"".join(base64.b64decode(x) for x in data.split(b"\r\n") if x.strip())
            if self.corrupt_uploads and content:
                content = bytes([content[0] ^ 0xFF]) + content[1:]
            self.files[_key(path)] = content
            return Reply()
        if script.startswith(scripts.MARK_UPLOAD_FINISH):
            dest, sha = scripts.param(script, "dest") or "", scripts.param(script, "sha256") or ""
            joined = b"".join(self.files.pop(_key(p), b"") for p in scripts.param_list(script, "parts"))
            actual = hashlib.sha256(joined).hexdigest()
            if actual != sha:
                return Reply(stderr=f"sha256 mismatch: got {actual}\r\n", exit_code=3)
            self.files[_key(dest)] = joined
            return Reply(stdout=f"sha256 {actual}\r\n")
        if script.startswith(scripts.MARK_NAIVE_DECODE):
            tmp, dest = scripts.param(script, "tmp") or "", scripts.param(script, "dest") or ""
            text = b"".join(self.files.pop(_key(tmp), b"").split())
            self.files[_key(dest)] = base64.b64decode(text)
            return Reply(stdout=hashlib.sha256(self.files[_key(dest)]).hexdigest() + "\r\n")
        if script.startswith(scripts.MARK_DOWNLOAD):
            path = scripts.param(script, "path") or ""
            if _key(path) not in self.files:
                return Reply(stderr=f"Could not find file '{path}'.\r\n", exit_code=1)
            return Reply(stdout=base64.encodebytes(self.files[_key(path)]).decode().replace("\n", "\r\n"))
        echo = re.fullmatch(r'echo (\S+) (>>?) "([^"]+)"', line)
        if echo:
            key = _key(echo.group(3))
            old = self.files.get(key, b"") if echo.group(2) == ">>" else b""
            self.files[key] = old + echo.group(1).encode() + b" \r\n"
            return Reply()
        nul = re.fullmatch(r'type nul > "([^"]+)"', line)
        if nul:
            self.files[_key(nul.group(1))] = b""
            return Reply()
        if line == "echo aib-ready":
            return Reply(stdout="aib-ready\r\n")
        return None


def _new_boot_id() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _key(path: str) -> str:
    return path.replace("/", "\\").lower()


def _response(body: str) -> bytes:
    ns = " ".join(f'xmlns:{k}="{v}"' for k, v in soap.NS.items() if k != "f")
    return (
        f'<s:Envelope xml:lang="en-US" {ns}><s:Header>'
        f"<wsa:Action>{soap.ACTION_RECEIVE}Response</wsa:Action>"
        f"<wsa:MessageID>uuid:{str(uuid.uuid4()).upper()}</wsa:MessageID>"
        f"<wsa:To>{soap.ANONYMOUS}</wsa:To></s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def _fault(code: str, message: str, subcode: str = "w:InternalError") -> bytes:
    return _response(
        "<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode>"
        f'<s:Value xmlns:w="{soap.NS["wsman"]}">{subcode}</s:Value></s:Subcode></s:Code>'
        f'<s:Reason><s:Text xml:lang="en-US">{message}</s:Text></s:Reason>'
        f'<s:Detail><f:WSManFault xmlns:f="{soap.NS["f"]}" Code="{code}" Machine="127.0.0.1">'
        f"<f:Message>{message}</f:Message></f:WSManFault></s:Detail></s:Fault>"
    )


async def _close(stream: anyio.abc.ByteStream) -> None:
    with cleanup_scope(1), suppress(OSError, anyio.BrokenResourceError, ssl.SSLError):
        await stream.aclose()


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


async def _serve(username: str, password: str, tls: bool, latency: float) -> None:
    async with WinRMTestServer(username=username, password=password, tls=tls) as server:
        server.slow = latency
        print(f"PORT {server.port}", flush=True)
        if server.thumbprint:
            print(f"THUMBPRINT {server.thumbprint}", flush=True)
        await anyio.sleep_forever()


def main() -> None:
    """Run a WinRM test server in its own process (``python -m aib_sdk.testing.winrm_server``) until killed."""
    import argparse

    parser = argparse.ArgumentParser(description="A loopback WinRM test server (not Windows).")
    parser.add_argument("--username", default="packer")
    parser.add_argument("--password", default="S3cret-Pa55")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    args = parser.parse_args()
    anyio.run(_serve, args.username, args.password, args.tls, args.latency)


if __name__ == "__main__":
    main()
