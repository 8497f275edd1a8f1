"""Debian 12 base images bootstrapped locally from the machine's apt mirror (``PlatformImage`` publisher Debian)."""

from __future__ import annotations

from aib_provider_qemu.debian.source import DebianPlatformSource

__all__ = ["DebianPlatformSource"]
