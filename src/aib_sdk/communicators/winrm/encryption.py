"""WinRM message encryption over HTTP: ``multipart/encrypted`` bodies sealed with the NTLM session (MS-WSMV 2.2.9.1).

Shared by the client and the test server; ``ctx`` is a completed pyspnego context (``wrap_winrm``/``unwrap_winrm``).
"""

from __future__ import annotations

import struct
from typing import Any

PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = b"--Encrypted Boundary"
CONTENT_TYPE = f'multipart/encrypted;protocol="{PROTOCOL}";boundary="Encrypted Boundary"'


class EncryptionError(Exception):
    """A sealed body could not be read (wrong layout, bad signature or length)."""


def seal(ctx: Any, message: bytes) -> bytes:
    """Encrypt one SOAP message into a WinRM ``multipart/encrypted`` body."""
    wrapped = ctx.wrap_winrm(message)
    stream = struct.pack("<i", len(wrapped.header)) + wrapped.header + wrapped.data
    return b"\r\n".join(
        [
            BOUNDARY,
            b"\tContent-Type: " + PROTOCOL.encode(),
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(len(message)).encode(),
            BOUNDARY,
            b"\tContent-Type: application/octet-stream",
            stream + BOUNDARY + b"--\r\n",
        ]
    )


def unseal(ctx: Any, body: bytes) -> bytes:
    """Decrypt a WinRM ``multipart/encrypted`` body; check the declared length."""
    parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
    if len(parts) < 2:
        raise EncryptionError("encrypted body has no MIME parts")
    out = b""
    for i in range(0, len(parts) - 1, 2):
        header, payload = parts[i], parts[i + 1]
        try:
            expected = int(header.split(b"Length=")[1].split(b"\r\n")[0].strip())
        except (IndexError, ValueError) as exc:
            raise EncryptionError("encrypted body has no OriginalContent length") from exc
        if payload.endswith(BOUNDARY + b"--\r\n"):
            payload = payload[: -len(BOUNDARY + b"--\r\n")]
        prefix = b"\tContent-Type: application/octet-stream\r\n"
        if payload.startswith(prefix):
            payload = payload[len(prefix) :]
        if len(payload) < 4:
            raise EncryptionError("encrypted part is truncated")
        sig_len = struct.unpack("<i", payload[:4])[0]
        plain: bytes = ctx.unwrap_winrm(payload[4 : 4 + sig_len], payload[4 + sig_len :])
        if len(plain) != expected:
            raise EncryptionError(f"decrypted length {len(plain)} != declared {expected}")
        out += plain
    return out
