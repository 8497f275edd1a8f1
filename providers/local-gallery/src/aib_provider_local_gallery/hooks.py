"""The provider's pluggy hooks: distributors, sources and the ``aib gallery`` commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aib_sdk.plugins import hookimpl

if TYPE_CHECKING:
    from aib_sdk.config import Config
    from aib_sdk.journal import Releaser
    from aib_sdk.options import BuildOptions
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


async def _release_claim(data: dict[str, Any], config: Config, options: BuildOptions) -> str:
    from anyio.to_thread import run_sync

    from aib_provider_local_gallery.store import release_claim

    return await run_sync(release_claim, data)


@hookimpl
def aib_register_releasers() -> list[tuple[str, Releaser]]:
    return [("local-gallery.claim", _release_claim)]
