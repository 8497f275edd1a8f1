"""The provider's pluggy hooks: Azure distributors (VHD, ManagedImage, SharedImage), sources and the ``az://``
artifact store, imported lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aib_sdk.plugins import hookimpl

if TYPE_CHECKING:
    from aib_sdk.journal import Releaser
    from aib_sdk.protocols import BlobStoreOpener, Distributor, Source


@hookimpl
def aib_register_distributors() -> list[type[Distributor]]:
    from aib_provider_azure.distributors.managed_image import AzureManagedImage
    from aib_provider_azure.distributors.shared_image import AzureSharedImage
    from aib_provider_azure.distributors.vhd import AzureVhd

    return [AzureVhd, AzureManagedImage, AzureSharedImage]


@hookimpl
def aib_register_sources() -> list[type[Source]]:
    from aib_provider_azure.sources import (
        AzureManagedImageSource,
        AzurePlatformImageSource,
        AzureSharedImageVersionSource,
    )

    return [AzureManagedImageSource, AzureSharedImageVersionSource, AzurePlatformImageSource]


@hookimpl
def aib_register_releasers() -> list[tuple[str, Releaser]]:
    from aib_provider_azure.release import release_blob, release_resource

    return [("azure.blob", release_blob), ("azure.resource", release_resource)]


@hookimpl
def aib_register_artifact_stores() -> list[tuple[str, BlobStoreOpener]]:
    from aib_provider_azure.artifact_store import open_azure_store

    return [("az", open_azure_store)]
