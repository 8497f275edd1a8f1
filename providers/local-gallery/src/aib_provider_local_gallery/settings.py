"""The provider's settings: ``[local-gallery]`` in aib.toml, ``AIB_LOCAL_GALLERY_<KEY>`` and ``AIB_GALLERY_ROOT``.

```toml
[local-gallery]
root = "~/.local/share/aib/gallery"   # or AIB_GALLERY_ROOT / AIB_LOCAL_GALLERY_ROOT
home_region = "local"                 # where definitions live unless told otherwise
max_parallel_regions = 4              # region copies written at once
fsync = true                          # flush each copy to disk before the version becomes visible
chunk_size = 524288                   # bytes per read/write step (cancellation takes effect between steps)
progress_interval = 0.25              # seconds between replication progress events

[local-gallery.regions]
westeurope = "/mnt/fast/westeurope"   # unmapped regions live under <root>/regions/<name>
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aib_provider_local_gallery.ids import check_name
from aib_sdk.config import Config
from aib_sdk.errors import UsageError

SECTION = "local-gallery"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class GallerySettings:
    root: Path
    regions: dict[str, Path] = field(default_factory=dict)
    home_region: str = "local"
    max_parallel_regions: int = 4
    fsync: bool = True
    chunk_size: int = 512 << 10
    progress_interval: float = 0.25
    create_missing: bool = False
    """``--create-missing``: a missing gallery or image definition is created by the build."""

    @classmethod
    def from_config(cls, config: Config) -> GallerySettings:
        section = config.section(SECTION)
        raw_root = config.env.get("AIB_GALLERY_ROOT") or section.get("root")
        if raw_root:
            root = Path(str(raw_root)).expanduser()
        else:
            data = config.env.get("XDG_DATA_HOME")
            base = Path(data) if data else Path(config.env.get("HOME", "~")) / ".local" / "share"
            root = base.expanduser() / "aib" / "gallery"
        if not root.is_absolute():
            raise UsageError(f"[{SECTION}] root must be an absolute path, not {str(root)!r}")
        regions: dict[str, Path] = {}
        table = section.get("regions", {})
        if not isinstance(table, dict):
            raise UsageError(f'[{SECTION}.regions] must be a table of region = "/dir"')
        for name, directory in table.items():
            path = Path(str(directory)).expanduser()
            if not path.is_absolute():
                raise UsageError(f"[{SECTION}.regions] {name}: {str(path)!r} is not an absolute path")
            regions[check_name("region", name).lower()] = path
        home = check_name("region", str(section.get("home_region", "local")))
        try:
            parallel = int(section.get("max_parallel_regions", 4))
            chunk = int(section.get("chunk_size", 512 << 10))
            interval = float(section.get("progress_interval", 0.25))
        except ValueError as exc:
            raise UsageError(f"[{SECTION}] max_parallel_regions, chunk_size, progress_interval: not a number") from exc
        return cls(
            root,
            regions,
            home,
            max(1, parallel),
            _bool(section.get("fsync", True)),
            max(4096, chunk),
            max(0.001, interval),
            _bool(section.get("create_missing", False)),
        )

    def region_root(self, region: str) -> Path:
        """Where the copies of ``region`` live: its mapped directory, else ``<root>/regions/<region>``."""
        key = check_name("region", region).lower()
        return self.regions.get(key, self.root / "regions" / key)
