"""AIB's Windows steps: PowerShell, WindowsRestart, WindowsUpdate, and Sysprep deprovisioning."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aib_sdk.protocols import Customizer

STEPS: list[type[Customizer]] = []
