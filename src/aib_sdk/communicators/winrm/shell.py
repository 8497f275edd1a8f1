"""The ``cmd`` shell resource over one :class:`~aib_sdk.communicators.winrm.session.Session`."""

from __future__ import annotations

from collections.abc import Callable
from xml.etree.ElementTree import Element

from aib_sdk.communicators.winrm import soap
from aib_sdk.communicators.winrm.session import Session
from aib_sdk.errors import CommunicatorError


class Shell:
    """A remote ``cmd`` shell: create it, run commands in it, feed stdin, receive output, signal, delete."""

    def __init__(self, session: Session, *, max_envelope_size: int, operation_timeout: float) -> None:
        self.session = session
        self.max_envelope_size = max_envelope_size
        self.operation_timeout = operation_timeout
        self.shell_id: str | None = None

    async def _call(self, action: str, body: str, options: dict[str, str] | None = None) -> Element:
        message = soap.envelope(
            to=self.session.endpoint.url,
            action=action,
            body=body,
            max_envelope_size=self.max_envelope_size,
            operation_timeout=self.operation_timeout,
            shell_id=self.shell_id,
            options=options,
        )
        reply = await self.session.post(message)
        return soap.parse(reply)

    async def open(self) -> None:
        try:
            root = await self._call(soap.ACTION_CREATE, soap.create_body(), soap.CREATE_OPTIONS)
            self.shell_id = soap.shell_id(root)
        except soap.WSManFault as exc:
            raise CommunicatorError(f"WinRM could not create a shell: {exc}") from exc

    async def command(self, command: str, *, console_stdin: bool = True) -> str:
        try:
            root = await self._call(
                soap.ACTION_COMMAND, soap.command_body(command), soap.command_options(console_stdin)
            )
            return soap.command_id(root)
        except soap.WSManFault as exc:
            raise CommunicatorError(f"WinRM could not start the command: {exc}") from exc

    async def send(self, command_id: str, data: bytes, *, end: bool = False) -> None:
        try:
            await self._call(soap.ACTION_SEND, soap.send_body(command_id, data, end=end))
        except soap.WSManFault as exc:
            raise CommunicatorError(f"WinRM refused input for the command: {exc}") from exc

    async def receive(self, command_id: str, on_chunk: Callable[[str, bytes], None]) -> int:
        """Long-poll until the command is done; hand each decoded chunk to ``on_chunk``; return the exit code."""
        while True:
            try:
                root = await self._call(soap.ACTION_RECEIVE, soap.receive_body(command_id))
            except soap.WSManFault as exc:
                if exc.is_operation_timeout:
                    continue
                raise CommunicatorError(f"WinRM Receive failed: {exc}") from exc
            got = soap.received(root)
            for stream, data in got.chunks:
                on_chunk(stream, data)
            if got.done:
                return got.exit_code if got.exit_code is not None else 0

    async def signal(self, command_id: str, code: str = soap.SIGNAL_TERMINATE) -> None:
        try:
            await self._call(soap.ACTION_SIGNAL, soap.signal_body(command_id, code))
        except soap.WSManFault as exc:
            raise CommunicatorError(f"WinRM Signal failed: {exc}") from exc

    async def close(self) -> None:
        if self.shell_id is None:
            return
        try:
            await self._call(soap.ACTION_DELETE, "")
        except soap.WSManFault as exc:
            raise CommunicatorError(f"WinRM could not delete the shell: {exc}") from exc
        finally:
            self.shell_id = None
