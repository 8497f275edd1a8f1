"""WS-Management SOAP envelopes for the ``cmd`` shell resource, and parsing of the replies.

Only what a WinRM ``cmd`` shell needs: Create, Command, Send, Receive, Signal, Delete, and faults. Parsing uses
the standard library's expat-based ElementTree, which resolves no external entities.
"""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_COMMAND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
ACTION_SEND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
ACTION_RECEIVE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
ACTION_SIGNAL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
SIGNAL_TERMINATE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"
SIGNAL_CTRL_C = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c"
STATE_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
FAULT_OPERATION_TIMEOUT = "2150858793"
"""WSManFault code of a Receive whose OperationTimeout passed with nothing to say: poll again."""
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
ENVELOPE_OVERHEAD = 4096
"""Bytes reserved for the SOAP wrapping of a Send (headers, ids): the rest of MaxEnvelopeSize carries data."""


def _q(prefix: str, local: str) -> str:
    return f"{{{NS[prefix]}}}{local}"


def _iso_duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def envelope(
    *,
    to: str,
    action: str,
    body: str,
    max_envelope_size: int,
    operation_timeout: float,
    shell_id: str | None = None,
    options: dict[str, str] | None = None,
    message_id: str | None = None,
) -> bytes:
    """One SOAP request to the ``cmd`` shell resource."""
    selector = (
        f'<wsman:SelectorSet><wsman:Selector Name="ShellId">{escape(shell_id)}</wsman:Selector></wsman:SelectorSet>'
        if shell_id
        else ""
    )
    option_set = ""
    if options:
        items = "".join(f"<wsman:Option Name={quoteattr(k)}>{escape(v)}</wsman:Option>" for k, v in options.items())
        option_set = f"<wsman:OptionSet>{items}</wsman:OptionSet>"
    mid = message_id or f"uuid:{str(uuid.uuid4()).upper()}"
    ns = " ".join(f'xmlns:{k}="{v}"' for k, v in NS.items() if k != "f")
    text = (
        f"<s:Envelope {ns}><s:Header>"
        f"<wsa:To>{escape(to)}</wsa:To>"
        f'<wsa:ReplyTo><wsa:Address s:mustUnderstand="true">{ANONYMOUS}</wsa:Address></wsa:ReplyTo>'
        f'<wsman:MaxEnvelopeSize s:mustUnderstand="true">{max_envelope_size}</wsman:MaxEnvelopeSize>'
        f"<wsa:MessageID>{mid}</wsa:MessageID>"
        '<wsman:Locale xml:lang="en-US" s:mustUnderstand="false"/>'
        '<p:DataLocale xml:lang="en-US" s:mustUnderstand="false"/>'
        f"<wsman:OperationTimeout>{_iso_duration(operation_timeout)}</wsman:OperationTimeout>"
        f'<wsman:ResourceURI s:mustUnderstand="true">{SHELL_URI}</wsman:ResourceURI>'
        f'<wsa:Action s:mustUnderstand="true">{action}</wsa:Action>'
        f"{selector}{option_set}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )
    return text.encode("utf-8")


def create_body() -> str:
    return (
        "<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams>"
        "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>"
    )


CREATE_OPTIONS = {"WINRS_NOPROFILE": "FALSE", "WINRS_CODEPAGE": "65001"}


def command_body(command: str, arguments: list[str] | None = None) -> str:
    args = "".join(f"<rsp:Arguments>{escape(a)}</rsp:Arguments>" for a in arguments or [])
    return f"<rsp:CommandLine><rsp:Command>{escape(command)}</rsp:Command>{args}</rsp:CommandLine>"


def command_options(console_stdin: bool = True) -> dict[str, str]:
    return {"WINRS_CONSOLEMODE_STDIN": "TRUE" if console_stdin else "FALSE", "WINRS_SKIP_CMD_SHELL": "FALSE"}


def send_body(command_id: str, data: bytes, *, end: bool = False) -> str:
    end_attr = ' End="true"' if end else ""
    payload = base64.b64encode(data).decode("ascii")
    return (
        f'<rsp:Send><rsp:Stream Name="stdin" CommandId="{escape(command_id)}"{end_attr}>{payload}'
        "</rsp:Stream></rsp:Send>"
    )


def receive_body(command_id: str) -> str:
    return (
        f'<rsp:Receive><rsp:DesiredStream CommandId="{escape(command_id)}">stdout stderr'
        "</rsp:DesiredStream></rsp:Receive>"
    )


def signal_body(command_id: str, code: str) -> str:
    return f'<rsp:Signal CommandId="{escape(command_id)}"><rsp:Code>{code}</rsp:Code></rsp:Signal>'


class WSManFault(Exception):
    """A SOAP fault returned by the WinRM service (``code`` is the WSManFault code, when present)."""

    def __init__(self, code: str | None, reason: str, subcode: str | None = None) -> None:
        self.code, self.reason, self.subcode = code, reason, subcode
        super().__init__(f"WSManFault {code or subcode or '?'}: {reason}")

    @property
    def is_operation_timeout(self) -> bool:
        return self.code == FAULT_OPERATION_TIMEOUT or (self.subcode or "").endswith("TimedOut")


def parse(xml: bytes) -> ET.Element:
    """Parse a reply; raise :class:`WSManFault` when it is a SOAP fault."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise WSManFault(None, f"unreadable WS-Management reply: {exc}") from exc
    fault = root.find(f".//{_q('s', 'Fault')}")
    if fault is not None:
        raise fault_from(fault)
    return root


def fault_from(fault: ET.Element) -> WSManFault:
    wsman_fault = fault.find(f".//{_q('f', 'WSManFault')}")
    code = wsman_fault.get("Code") if wsman_fault is not None else None
    message = ""
    if wsman_fault is not None:
        msg = wsman_fault.find(_q("f", "Message"))
        if msg is not None:
            message = "".join(msg.itertext()).strip()
    if not message:
        text = fault.find(f".//{_q('s', 'Reason')}/{_q('s', 'Text')}")
        message = (text.text or "").strip() if text is not None else "unknown fault"
    sub = fault.find(f"{_q('s', 'Code')}/{_q('s', 'Subcode')}/{_q('s', 'Value')}")
    subcode = (sub.text or "").strip() if sub is not None else None
    return WSManFault(code, message, subcode)


def shell_id(root: ET.Element) -> str:
    """The ShellId of a Create reply (from the body, else from the ResourceCreated selector)."""
    node = root.find(f".//{_q('rsp', 'ShellId')}")
    if node is not None and node.text:
        return node.text.strip()
    for sel in root.iter(_q("wsman", "Selector")):
        if sel.get("Name") == "ShellId" and sel.text:
            return sel.text.strip()
    raise WSManFault(None, "Create reply carries no ShellId")


def command_id(root: ET.Element) -> str:
    node = root.find(f".//{_q('rsp', 'CommandId')}")
    if node is None or not node.text:
        raise WSManFault(None, "Command reply carries no CommandId")
    return node.text.strip()


@dataclass
class Received:
    """One Receive reply: decoded stream chunks in order, and the exit code once the command is done."""

    chunks: list[tuple[str, bytes]] = field(default_factory=list)
    done: bool = False
    exit_code: int | None = None


def received(root: ET.Element) -> Received:
    out = Received()
    for stream in root.iter(_q("rsp", "Stream")):
        if stream.text:
            out.chunks.append((stream.get("Name", "stdout"), base64.b64decode(stream.text)))
    state = root.find(f".//{_q('rsp', 'CommandState')}")
    if state is not None and state.get("State") == STATE_DONE:
        out.done = True
        code = state.find(_q("rsp", "ExitCode"))
        out.exit_code = int(code.text) if code is not None and code.text else 0
    return out
