"""Built-in distributors: ``DiskFile`` and ``VHD`` to ``file://`` URIs (they need only the qemu-img wrapper)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aib_sdk.protocols import Distributor

DISTRIBUTORS: list[type[Distributor]] = []
