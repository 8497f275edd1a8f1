"""Plugin hooks: the ``VHD``→``s3://`` and ``S3Image`` distributors, the ``S3Image`` source and the ``s3://``
artifact store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aib_sdk.plugins import hookimpl

if TYPE_CHECKING:
    from aib_sdk.journal import Releaser
    from aib_sdk.protocols import BlobStoreOpener, Distributor, Source


@hookimpl
def aib_register_distributors() -> list[type[Distributor]]:
    from aib_provider_s3_vhd.distributors import S3ImagePublisher, S3VhdPublisher

    return [S3VhdPublisher, S3ImagePublisher]


@hookimpl
def aib_register_sources() -> list[type[Source]]:
    from aib_provider_s3_vhd.source import S3ImageResolver

    return [S3ImageResolver]


@hookimpl
def aib_register_releasers() -> list[tuple[str, Releaser]]:
    from aib_provider_s3_vhd.multipart import release_upload

    return [("s3.multipart", release_upload)]


@hookimpl
def aib_register_artifact_stores() -> list[tuple[str, BlobStoreOpener]]:
    from aib_provider_s3_vhd.artifact_store import open_s3_store

    return [("s3", open_s3_store)]
