"""``TinyGuestSource``: the tiny test guest as a ``PlatformImage`` with publisher ``aib-sdk``.

``{"type": "PlatformImage", "publisher": "aib-sdk", "offer": "tiny-test-guest", "sku": "busybox",
"version": "latest"}`` resolves to a cached busybox + dropbear disk built from Debian packages
(:mod:`aib_sdk.testing.tiny_guest`): direct kernel boot with its initramfs, virtio root (a disk bus QEMU can
migrate, so the step cache can keep the VM's RAM state), the NoCloud seed read by its own init.
"""

from __future__ import annotations

from aib_sdk.artifacts import DiskImage
from aib_sdk.bases import SourceBase
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.errors import SourceError
from aib_sdk.models.specs import PlatformImageSource
from aib_sdk.testing import tiny_guest

PUBLISHER = "aib-sdk"


class TinyGuestSource(SourceBase[PlatformImageSource]):
    """Resolves the tiny test guest (``PlatformImage`` publisher ``aib-sdk``)."""

    @classmethod
    def accepts(cls, spec: PlatformImageSource, config: Config) -> bool:
        return (spec.publisher or "").lower() == PUBLISHER

    async def resolve(self, spec: PlatformImageSource, ctx: RunContext) -> DiskImage:
        wanted = {k: v for k, v in tiny_guest.SPEC.items() if k in ("offer", "sku")}
        got = {"offer": spec.offer or "", "sku": spec.sku or ""}
        if got != wanted or (spec.version or "latest") not in ("latest", ""):
            raise SourceError(
                f"publisher aib-sdk offers only offer {wanted['offer']!r}, sku {wanted['sku']!r}, "
                f"version 'latest' (asked for offer {spec.offer!r}, sku {spec.sku!r}, version {spec.version!r})"
            )
        ctx.log("source", "preparing the tiny test guest (cached after the first build)", "info")
        guest = await tiny_guest.ensure_tiny_guest(ctx.cache_dir)
        return DiskImage(
            path=guest.disk,
            format="raw",
            os_type="Linux",
            hyper_v_generation="V1",
            exact_version=guest.version,
            kernel=guest.kernel,
            initrd=guest.initrd,
            kernel_args=guest.kernel_args,
            disk_interface="virtio",
            access="cloud-init",
            attributes={
                "ready_line": guest.ready_line,
                "poweroff_command": "sync; sudo poweroff -f",
                "memory_cap_mib": "512",
            },
        )
