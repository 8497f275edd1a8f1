"""AIB's Linux steps: Shell, File, and the hidden deprovision step."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aib_sdk.protocols import Customizer

STEPS: list[type[Customizer]] = []
