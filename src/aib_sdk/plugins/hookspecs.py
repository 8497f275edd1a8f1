"""Hook specifications. Every hook is synchronous and returns classes; nothing async happens in a hook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aib_sdk.plugins import hookspec

if TYPE_CHECKING:
    from pydantic import BaseModel

    from aib_sdk.journal import Releaser
    from aib_sdk.plugins.registry import SpecKind
    from aib_sdk.protocols import BlobStoreOpener, BuildHost, Communicator, Customizer, Distributor, Source


@hookspec
def aib_register_spec_models() -> list[tuple[SpecKind, type[BaseModel]]]:
    """Template entry models with no implementation of their own, as ``(kind, model)``.

    ``kind`` is ``"source"``, ``"customizer"``, ``"validator"`` or ``"distributor"``. The core declares every AIB
    type this way so that any AIB template validates even when no provider can build it.
    """
    return []


@hookspec
def aib_register_sources() -> list[type[Source]]:
    """Source implementations (each with ``type_name``, ``spec_model`` and ``claims``)."""
    return []


@hookspec
def aib_register_build_hosts() -> list[type[BuildHost]]:
    """Build hosts (QEMU, a cloud VM …), each with a unique ``name``."""
    return []


@hookspec
def aib_register_communicators() -> list[type[Communicator]]:
    """Communicators (SSH, WinRM …), each with a unique ``name``."""
    return []


@hookspec
def aib_register_customizers() -> list[type[Customizer]]:
    """Step types for ``customize[]`` and, when they have a ``validator_model``, for ``inVMValidations[]``."""
    return []


@hookspec
def aib_register_distributors() -> list[type[Distributor]]:
    """Distributors; several may share a ``type_name`` and are told apart by ``claims``."""
    return []


@hookspec
def aib_register_releasers() -> list[tuple[str, Releaser]]:
    """Release functions for journaled resource kinds, as ``(kind, release)`` (see :mod:`aib_sdk.journal`).

    ``await release(data, config, options)`` removes one resource a dead run left behind (``data`` is what the run
    journaled) and returns a line saying what it did; it must succeed when the resource is already gone.
    """
    return []


@hookspec
def aib_register_artifact_stores() -> list[tuple[str, BlobStoreOpener]]:
    """Artifact store backends, as ``(uri_scheme, opener)`` (see :mod:`aib_sdk.artifact_store`).

    ``opener(location, config)`` returns a :class:`~aib_sdk.protocols.BlobStore` for a location such as
    ``s3://bucket/prefix``; it may parse settings but must not do I/O.
    """
    return []


@hookspec
def aib_add_cli_commands(subparsers: Any) -> None:
    """Add subcommands to the ``aib`` CLI (an ``argparse`` sub-parsers object).

    A command's parser must set ``func`` (``set_defaults(func=...)``) to a callable taking the parsed
    ``argparse.Namespace`` and returning an exit code; it may be a coroutine function (run with anyio).
    """
