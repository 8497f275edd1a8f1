"""``BuildOptions``: everything a caller can set on a build besides the template (mirrors ``aib build``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aib_sdk.config import Config
from aib_sdk.events import EventSink

if TYPE_CHECKING:
    import httpx

    from aib_sdk.plugins.manager import PluginManager


@dataclass
class BuildOptions:
    """Options of one build.

    - ``params``: values for ARM parameters and ``<placeholders>`` (``--param K=V``).
    - ``profile``: a build profile (``local`` rewrites Azure ARM ids to subscription ``local``).
    - ``source``: replaces the template's source (a JSON spec as a dict, or a disk path) (``--source``).
    - ``uri_map``: URI prefix → replacement prefix, applied to every fetched URI (``--map-uri``); checksums
      are still verified.
    - ``timeout``: seconds; overrides ``buildTimeoutInMinutes`` (``--timeout``).
    - ``resource``: which image template of an ARM deployment to build (``--resource``).
    - ``template_name``: the name used for the staging area when the template has none (the file's stem).
    - ``build_host``: which registered build host to use (default: the first available one).
    - ``plugins``: a plugin manager to use instead of the default one (entry points + built-ins).
    - ``config``: configuration (default: :meth:`Config.load`).
    - ``on_event``: a callback receiving every event (synchronously; it must not block).
    - ``credential``: a token credential for cloud providers (e.g. azure-identity's).
    - ``settings``: provider settings over the configuration file, per provider table name
      (``{"qemu": {"network": "none"}}``); ``"*"`` applies to every provider. Each provider reads its own table as
      its typed settings (docs/design/0007-provider-settings.md).
    - ``create_missing`` (``--create-missing``): the same as ``settings={"*": {"create_missing": True}}``: gallery
      distributors create missing galleries/definitions.
    - ``trust_on_first_use``: the same as ``settings={"*": {"trust_on_first_use": True}}``: communicators accept a
      guest host key that could not be pinned (off by default).
    - ``max_parallel_targets``: how many distribution targets publish at once.
    - ``http_transport``: an ``httpx.AsyncBaseTransport`` every provider's HTTP traffic goes through (httpx's
      transport seam: a mock, a proxy, an instrumented pool); the runtime's retries wrap it.
    - ``cache``: the step cache (on by default; ``False`` is ``--no-cache``): boot from the longest stored prefix of
      the template's steps and keep a disk layer after each step that runs (docs/caching.md).
    - ``ram_state``: with the cache, keep the build VM's RAM state with each layer and resume it instead of booting
      the layer (``False`` is ``--no-ram-state``; ``[cache] ram_state = false`` turns it off for every build).
    - ``resume``: ``--resume [RUN_ID]``: a run id, or ``"latest"`` (the template's last run); reuses every layer
      before the first changed or failed step of that run and reports it.
    """

    params: dict[str, str] = field(default_factory=dict)
    profile: str | None = None
    source: dict[str, Any] | str | Path | None = None
    uri_map: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    resource: str | None = None
    template_name: str | None = None
    build_host: str | None = None
    plugins: PluginManager | None = None
    config: Config | None = None
    on_event: EventSink | None = None
    credential: Any = None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    create_missing: bool = False
    trust_on_first_use: bool = False
    max_parallel_targets: int = 8
    http_transport: httpx.AsyncBaseTransport | None = None
    cache: bool = True
    ram_state: bool = True
    resume: str | None = None
    base_directory: Path | None = None
    """Directory that relative paths in the template (scripts, files) are resolved against."""
    context: Path | None = None
    """The build context: local files a template names must lie under it (``--context``; default: the template's
    folder, else ``base_directory``; with neither, a template given as a dict is not confined)."""
    run_id: str | None = None
    """The run id to use instead of a fresh one (a remote engine names the run before it starts)."""


_OVERRIDES: ContextVar[tuple[tuple[str, Any], ...]] = ContextVar("aib_build_option_overrides", default=())


@contextmanager
def override_options(**fields: Any) -> Iterator[None]:
    """Inside the block, every Builder takes these :class:`BuildOptions` fields over its own (for tests, as
    pydantic-ai's ``Agent.override``): ``with override_options(plugins=pm, build_host="fake"): main(["build", …])``.

    Blocks nest (the inner one wins per field); the override follows the context into tasks started inside it.
    """
    unknown = set(fields) - {f.name for f in dataclasses.fields(BuildOptions)}
    if unknown:
        raise TypeError(f"not BuildOptions fields: {', '.join(sorted(unknown))}")
    token = _OVERRIDES.set(tuple({**dict(_OVERRIDES.get()), **fields}.items()))
    try:
        yield
    finally:
        _OVERRIDES.reset(token)


def with_overrides(options: BuildOptions) -> BuildOptions:
    """``options`` with the fields of the innermost :func:`override_options` block applied (a copy)."""
    overrides = dict(_OVERRIDES.get())
    return dataclasses.replace(options, **overrides) if overrides else options


def provider_settings(options: BuildOptions) -> dict[str, dict[str, Any]]:
    """``options.settings`` with the cross-provider flags (``create_missing``, ``trust_on_first_use``) under ``"*"``."""
    settings = {name: dict(values) for name, values in options.settings.items()}
    flags = {"create_missing": options.create_missing, "trust_on_first_use": options.trust_on_first_use}
    for key, on in flags.items():
        if on:
            settings.setdefault("*", {})[key] = True
    return settings
