"""The qemu provider's plugin hooks: the QEMU build host and its sources."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aib_sdk.plugins import hookimpl

if TYPE_CHECKING:
    from aib_sdk.journal import Releaser
    from aib_sdk.protocols import BuildHost, Source


@hookimpl
def aib_register_build_hosts() -> list[type[BuildHost]]:
    from aib_provider_qemu.host import QemuBuildHost

    return [QemuBuildHost]


@hookimpl
def aib_register_sources() -> list[type[Source]]:
    from aib_provider_qemu.catalogue import CataloguePlatformSource
    from aib_provider_qemu.debian import DebianPlatformSource
    from aib_provider_qemu.tiny_source import TinyGuestSource
    from aib_provider_qemu.url_source import UrlDiskSource

    return [TinyGuestSource, DebianPlatformSource, CataloguePlatformSource, UrlDiskSource]


@hookimpl
def aib_register_releasers() -> list[tuple[str, Releaser]]:
    from aib_provider_qemu.child import release_vm

    return [("qemu.vm", release_vm)]
