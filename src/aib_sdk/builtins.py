"""The core's own plugin: AIB's type models, the built-in steps, communicators and file distributors.

Registered through the same hooks as third-party plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aib_sdk.plugins import hookimpl

if TYPE_CHECKING:
    from pydantic import BaseModel

    from aib_sdk.journal import Releaser
    from aib_sdk.plugins.registry import SpecKind
    from aib_sdk.protocols import BlobStoreOpener, Communicator, Customizer, Distributor


@hookimpl
def aib_register_spec_models() -> list[tuple[SpecKind, type[BaseModel]]]:
    from aib_sdk.models import specs  # pydantic models: loaded when collected, not when the plugin registers

    entries: list[tuple[SpecKind, type[BaseModel]]] = []
    entries += [("source", m) for m in specs.AIB_SOURCES]
    entries += [("customizer", m) for m in specs.AIB_CUSTOMIZERS]
    entries += [("validator", m) for m in specs.AIB_VALIDATORS]
    entries += [("distributor", m) for m in specs.AIB_DISTRIBUTORS]
    return entries


@hookimpl
def aib_register_customizers() -> list[type[Customizer]]:
    from aib_sdk.steps import linux, windows

    return [*linux.STEPS, *windows.STEPS]


@hookimpl
def aib_register_communicators() -> list[type[Communicator]]:
    from aib_sdk.communicators import builtin_communicators

    return builtin_communicators()


@hookimpl
def aib_register_distributors() -> list[type[Distributor]]:
    from aib_sdk.distributors import DISTRIBUTORS

    return list(DISTRIBUTORS)


@hookimpl
def aib_register_releasers() -> list[tuple[str, Releaser]]:
    from aib_sdk.journal import release_path

    return [("file", release_path)]


@hookimpl
def aib_register_artifact_stores() -> list[tuple[str, BlobStoreOpener]]:
    from aib_sdk.artifact_store import open_directory_store

    return [("file", open_directory_store)]
