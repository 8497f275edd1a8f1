"""The provider's pluggy hooks: distributors, sources and the ``aib gallery`` commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aib_sdk.plugins import hookimpl

if TYPE_CHECKING:
    from aib_sdk.protocols import Distributor, Source


@hookimpl
def aib_register_distributors() -> list[type[Distributor]]:
    from aib_provider_local_gallery.distributors import LocalManagedImageDistributor, LocalSharedImageDistributor

    return [LocalSharedImageDistributor, LocalManagedImageDistributor]


@hookimpl
def aib_register_sources() -> list[type[Source]]:
    from aib_provider_local_gallery.sources import LocalManagedImageSource, LocalSharedImageVersionSource

    return [LocalSharedImageVersionSource, LocalManagedImageSource]


@hookimpl
def aib_add_cli_commands(subparsers: Any) -> None:
    from aib_provider_local_gallery.cli import add_commands

    add_commands(subparsers)
