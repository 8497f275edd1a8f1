"""The WinRM communicator: WS-Management over httpx (NTLM sealing over HTTP, Basic/NTLM over HTTPS)."""

from aib_sdk.communicators.winrm.communicator import WinRMCommunicator
from aib_sdk.communicators.winrm.session import AuthenticationError, CertificatePinError, ConnectionLost

__all__ = ["AuthenticationError", "CertificatePinError", "ConnectionLost", "WinRMCommunicator"]
