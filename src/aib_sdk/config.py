"""Configuration: an optional ``aib.toml`` plus ``AIB_<PROVIDER>_<KEY>`` environment variables.

Lookup order for the file: an explicit path, ``AIB_CONFIG``, ``$XDG_CONFIG_HOME/aib/aib.toml``. Each provider reads
its own table (``[qemu]``, ``[local-gallery]``, ``[azure]`` …); every key can also be given as an environment
variable whose name is ``AIB_`` + the provider name upper-cased with ``-`` as ``_`` + ``_`` + the key upper-cased
(``AIB_QEMU_SSH_USER``, ``AIB_LOCAL_GALLERY_ROOT``). The environment wins over the file. ``[profiles.NAME]``
tables hold build profiles. ``make demo`` needs none of it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aib_sdk.errors import UsageError


def _env_prefix(provider: str) -> str:
    return "AIB_" + provider.upper().replace("-", "_") + "_"


class Config:
    """Read-only view of the configuration for one process or one build."""

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.data: dict[str, Any] = dict(data or {})
        self.env: dict[str, str] = dict(os.environ if env is None else env)
        self.settings: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (settings or {}).items()}
        """Settings given by the caller (``BuildOptions.settings``): per provider, and ``"*"`` for every provider."""

    def with_settings(self, settings: Mapping[str, Mapping[str, Any]]) -> Config:
        """This configuration with ``settings`` over it (per provider; ``"*"``: every provider's section)."""
        if not any(settings.values()):
            return self
        merged = {k: dict(v) for k, v in self.settings.items()}
        for provider, values in settings.items():
            merged.setdefault(provider, {}).update({k.lower(): v for k, v in values.items()})
        return Config(self.data, self.env, merged)

    @classmethod
    def load(cls, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
        """Read the configuration file if there is one (a missing default file is fine)."""
        environ = dict(os.environ if env is None else env)
        explicit = path or environ.get("AIB_CONFIG")
        if explicit:
            file = Path(explicit).expanduser()
            if not file.is_file():
                raise UsageError(f"configuration file not found: {file}")
        else:
            base = Path(environ.get("XDG_CONFIG_HOME") or Path(environ.get("HOME", "~")) / ".config")
            file = base.expanduser() / "aib" / "aib.toml"
            if not file.is_file():
                return cls({}, environ)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"{file}: cannot read configuration: {exc}") from exc
        return cls(data, environ)

    def section(self, provider: str) -> dict[str, Any]:
        """The provider's table merged with its environment variables (keys lower-cased), then the caller's
        :attr:`settings` (``"*"``, then the provider's own)."""
        table = self.data.get(provider, {})
        merged: dict[str, Any] = dict(table) if isinstance(table, dict) else {}
        prefix = _env_prefix(provider)
        for name, value in self.env.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                merged[name[len(prefix) :].lower()] = value
        merged.update(self.settings.get("*", {}))
        merged.update(self.settings.get(provider, {}))
        return merged

    def get(self, provider: str, key: str, default: Any = None) -> Any:
        return self.section(provider).get(key, default)

    def profile(self, name: str) -> dict[str, Any]:
        profiles = self.data.get("profiles", {})
        value = profiles.get(name) if isinstance(profiles, dict) else None
        return dict(value) if isinstance(value, dict) else {}

    @property
    def home(self) -> Path:
        """``AIB_HOME``: staging areas and run records (default ``~/.local/state/aib``)."""
        value = self.env.get("AIB_HOME")
        if value:
            return Path(value).expanduser()
        state = self.env.get("XDG_STATE_HOME")
        return (Path(state) if state else Path(self.env.get("HOME", "~")) / ".local" / "state").expanduser() / "aib"

    @property
    def cache(self) -> Path:
        """``AIB_CACHE``: base images and downloads keyed by digest (default ``~/.cache/aib``)."""
        value = self.env.get("AIB_CACHE")
        if value:
            return Path(value).expanduser()
        cache = self.env.get("XDG_CACHE_HOME")
        return (Path(cache) if cache else Path(self.env.get("HOME", "~")) / ".cache").expanduser() / "aib"
