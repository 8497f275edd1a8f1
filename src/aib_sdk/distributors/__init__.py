"""Built-in distributors: ``DiskFile`` and ``VHD`` to ``file://`` URIs (they need only the qemu-img wrapper)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aib_sdk.protocols import Distributor

from aib_sdk.distributors.files import DiskFileDistributor, LocalVhdDistributor

DISTRIBUTORS: list[type[Distributor]] = [DiskFileDistributor, LocalVhdDistributor]
