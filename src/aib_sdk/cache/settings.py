"""The step cache's settings (``[cache]`` in aib.toml, or ``AIB_CACHE_<KEY>``) and the size/age parsers.

- ``dir``: where layers live (default ``AIB_CACHE/layers``);
- ``max_size``: the size cap (``20G`` by default; ``none``: no cap); least recently used layers go first;
- ``enabled``: ``false`` turns the cache off for every build (``--no-cache`` does it for one);
- ``ram_state``: keep the build VM's RAM state with each layer and resume it instead of booting the layer
  (default ``true``; ``--no-ram-state`` turns it off for one build).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from aib_sdk.config import Config
from aib_sdk.errors import UsageError

DEFAULT_MAX_SIZE = 20 * 1024**3
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str | int, *, what: str = "size") -> int:
    """Bytes from ``500M``, ``20G``, ``1.5GiB``, ``1024`` (binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise UsageError(f"{what} must not be negative, got {text}")
        return text
    match = _SIZE.match(str(text))
    if match is None:
        raise UsageError(f"{what} expects a size such as 500M, 20G or 1T, got {text!r}")
    number, unit, _ = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.lower()])


def parse_age(text: str) -> float:
    """Seconds from ``30m``, ``12h``, ``7d``, ``2w``, ``1d12h`` or a bare number of seconds."""
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    pos, total = 0, 0.0
    for match in _AGE.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _AGE_UNITS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value):
        raise UsageError(f"an age such as 12h, 7d or 2w was expected, got {text!r}")
    return total


def _flag(value: object, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"[cache] expects true or false, got {value!r}")


@dataclass(frozen=True)
class CacheSettings:
    """The ``[cache]`` table, read once per build or command."""

    directory: Path
    max_size: int | None
    enabled: bool = True
    ram_state: bool = True

    @classmethod
    def from_config(cls, config: Config) -> CacheSettings:
        section = config.section("cache")
        raw_dir = section.get("dir")
        directory = Path(str(raw_dir)).expanduser() if raw_dir else config.cache / "layers"
        raw_max = section.get("max_size")
        if raw_max is None:
            max_size: int | None = DEFAULT_MAX_SIZE
        elif str(raw_max).strip().lower() in ("none", ""):
            max_size = None
        else:
            max_size = parse_size(raw_max, what="[cache] max_size")
        return cls(
            directory=directory,
            max_size=max_size,
            enabled=_flag(section.get("enabled"), True),
            ram_state=_flag(section.get("ram_state"), True),
        )
