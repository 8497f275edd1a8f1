"""The qemu provider's DiskImage source passes the provider conformance suite."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from aib_provider_qemu.url_source import UrlDiskSource
from aib_sdk.testing.conformance import SourceConformance


class TestDiskImageSource(SourceConformance):
    source = UrlDiskSource

    def source_spec(self, where: Path) -> dict[str, Any]:
        disk = where / "base.qcow2"
        if not disk.exists():
            where.mkdir(parents=True, exist_ok=True)
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
        return {"type": "DiskImage", "uri": disk.as_uri(), "format": "qcow2"}
