"""The WinRM communicator: WS-Management over httpx (NTLM sealing over HTTP, Basic/NTLM over HTTPS).

The names below load on first use, so that importing a light submodule (``scripts``) or a module that only names
the communicator in annotations does not load the HTTP and SOAP stack (a Linux build never needs it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aib_sdk.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from aib_sdk.communicators.winrm.communicator import WinRMCommunicator
    from aib_sdk.communicators.winrm.session import AuthenticationError, CertificatePinError, ConnectionLost

_EXPORTS = {
    "WinRMCommunicator": "aib_sdk.communicators.winrm.communicator",
    "AuthenticationError": "aib_sdk.communicators.winrm.session",
    "CertificatePinError": "aib_sdk.communicators.winrm.session",
    "ConnectionLost": "aib_sdk.communicators.winrm.session",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["AuthenticationError", "CertificatePinError", "ConnectionLost", "WinRMCommunicator"]
