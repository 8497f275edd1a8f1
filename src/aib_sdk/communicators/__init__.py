"""Built-in communicators: SSH (asyncssh) and WinRM (async, over httpx)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aib_sdk.protocols import Communicator


def builtin_communicators() -> list[type[Communicator]]:
    """The communicator classes the core registers (imported lazily: asyncssh is heavy)."""
    found: list[type[Communicator]] = []
    try:
        from aib_sdk.communicators.ssh import SshCommunicator
    except ImportError:
        pass
    else:
        found.append(SshCommunicator)
    try:
        from aib_sdk.communicators.winrm import WinRMCommunicator
    except ImportError:
        pass
    else:
        found.append(WinRMCommunicator)
    return found
