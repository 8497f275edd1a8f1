"""An instance-scoped plugin manager: built-ins, entry points (lazily), a block-list, and routing."""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, cast

import pluggy

from aib_sdk.errors import PluginError, UsageError
from aib_sdk.plugins import PROJECT, hookspecs
from aib_sdk.plugins.registry import Registry, check_class, check_spec_model, type_name_of

if TYPE_CHECKING:
    from pydantic import BaseModel

    from aib_sdk.config import Config
    from aib_sdk.journal import Releaser
    from aib_sdk.plugins.catalog import Catalog, Implementation
    from aib_sdk.protocols import BuildHost, Communicator, Customizer, Distributor, Source

BUILTIN_PLUGIN = "aib-sdk"
logger = logging.getLogger("aib_sdk.plugins")


class _Failed:
    """A hook implementation that raised: its plugin is broken."""

    def __init__(self, error: str) -> None:
        self.error = error


def disabled_by_env() -> set[str]:
    """The entry-point names blocked by the comma-separated ``AIB_DISABLE_PLUGINS``."""
    return {p.strip() for p in os.environ.get("AIB_DISABLE_PLUGINS", "").split(",") if p.strip()}


class PluginManager:
    """Holds the plugins of one embedding; nothing here is global.

    ``entry_points=False`` skips installed distributions (for embedding and tests); ``disabled`` (default: the
    comma-separated ``AIB_DISABLE_PLUGINS``) blocks entry points by name; ``builtins=False`` leaves out the core's
    own steps, communicators and AIB type models. Entry points load on first use.

    :attr:`spec_registry` (the template models only, all that validation needs) comes from the on-disk
    :mod:`~aib_sdk.plugins.catalog` when the manager holds exactly the installed plugins and the catalogue is current,
    so validating imports no plugin's implementation; :attr:`registry` collects everything and refreshes it. Routing
    (:meth:`source_for`, :meth:`distributor_for`, :meth:`customizer` …) uses the catalogue too while the registry is
    not collected: it imports only the implementations of the asked type, in the registry's order (third-party
    plugins before the core), so a build imports only the providers its template uses.
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        builtins: bool = True,
        plugins: Iterable[object] = (),
        disabled: Iterable[str] | None = None,
    ) -> None:
        self._pm = pluggy.PluginManager(PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self.disabled = disabled_by_env() if disabled is None else set(disabled)
        for name in self.disabled:
            self._pm.set_blocked(name)
        self._want_entry_points = entry_points
        self._entry_points_loaded = False
        self._registry: Registry | None = None
        self._spec_registry: Registry | None = None
        self._catalog: Catalog | Literal[False] | None = None  # read once; False: none current
        # The catalogue describes the installation: only a manager of exactly the installed plugins may use it.
        self._catalog_eligible = entry_points and builtins
        self._owners: dict[Any, str] = {}  # what lazy routing imported → its plugin
        self._warned = False
        if builtins:
            from aib_sdk import builtins as builtin_hooks

            self._pm.register(builtin_hooks, name=BUILTIN_PLUGIN)
        for plugin in plugins:
            self.register(plugin)

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object or module (a ``@hookimpl`` holder)."""
        try:
            self._pm.register(plugin, name=name)
        except ValueError as exc:
            raise PluginError(str(exc)) from exc
        self._registry = None
        self._spec_registry = None
        self._catalog_eligible = False

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or not self._want_entry_points:
            return
        self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=PROJECT):
            if ep.name in self.disabled or self._pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
            self._pm.register(plugin, name=ep.name)

    def plugin_names(self) -> list[str]:
        self._load_entry_points()
        return [name for name, plugin in self._pm.list_name_plugin() if plugin is not None]

    @property
    def registry(self) -> Registry:
        """The merged registry; built on first use, rebuilt after :meth:`register`."""
        if self._registry is None:
            self._load_entry_points()
            try:
                self._pm.check_pending()
            except pluggy.PluginValidationError as exc:
                raise PluginError(str(exc)) from exc
            self._registry = self._collect()
            if self._catalog_eligible and self._catalog_from_disk() is None:
                from aib_sdk.plugins import catalog

                catalog.save(self._registry, self.disabled)
        return self._registry

    @property
    def spec_registry(self) -> Registry:
        """A registry holding at least every spec model (enough to validate templates and print the schema).

        The full :attr:`registry` once it is built; before that, the spec models named by a current on-disk
        catalogue (importing their modules only); else the full registry.
        """
        if self._registry is not None:
            return self._registry
        if self._spec_registry is None:
            found = self._catalog_from_disk()
            if found is not None:
                from aib_sdk.plugins import catalog

                self._spec_registry = catalog.spec_registry(found)
                self._warn_broken(found)
            if self._spec_registry is None:
                return self.registry
        return self._spec_registry

    def load(self) -> None:
        """Read what checking and routing a template need: a current catalogue and its spec models, else the full
        :attr:`registry` (importing every plugin). Blocking: call it in a worker thread."""
        self.spec_registry  # noqa: B018 - built and kept
        if self._routes() is None:
            self.registry  # noqa: B018 - collected and kept

    def _warn_broken(self, found: Catalog) -> None:
        """Log the catalogue's broken plugins once, as collecting the registry would have."""
        if not self._warned:
            self._warned = True
            for plugin, error in found.broken.items():
                logger.warning("plugin %s is left out: %s", plugin, error)

    def types_by_plugin(self) -> dict[str, list[str]]:
        """Plugin name → the ``kind:Type`` entries it provides (from a current catalogue when there is one)."""
        found = self._catalog_from_disk() if self._registry is None else None
        return dict(found.types_by_plugin) if found is not None else self.registry.types_by_plugin()

    def broken_plugins(self) -> dict[str, str]:
        """Plugins left out because a class they registered is incomplete (plugin → error); from a current
        catalogue when there is one (the warning is repeated then, as collecting would have logged it)."""
        found = self._catalog_from_disk() if self._registry is None else None
        if found is None:
            return dict(self.registry.broken)
        for plugin, error in found.broken.items():
            logger.warning("plugin %s is left out: %s", plugin, error)
        return dict(found.broken)

    def catalog(self) -> Catalog | None:
        """The current on-disk catalogue of exactly this manager's plugins, if any (see :attr:`spec_registry`)."""
        return self._catalog_from_disk()

    def _catalog_from_disk(self) -> Catalog | None:
        if not self._catalog_eligible:
            return None
        if self._catalog is None:
            from aib_sdk.plugins import catalog

            self._catalog = catalog.load(self.disabled) or False
        return self._catalog or None

    def add_cli_commands(self, subparsers: Any) -> None:
        """Let every plugin add its ``aib`` subcommands (hook ``aib_add_cli_commands``) to ``subparsers``."""
        self._load_entry_points()
        self._pm.hook.aib_add_cli_commands(subparsers=subparsers)

    def _calls(self, hook: Any) -> Iterable[tuple[str, list[Any] | _Failed]]:
        # Call each plugin's implementation separately so every registered class knows its plugin.
        for impl in reversed(hook.get_hookimpls()):
            name = self._pm.get_name(impl.plugin) or "?"
            try:
                result = impl.function()
            except Exception as exc:  # a hook that fails (e.g. its lazy import) breaks its plugin only
                result = _Failed(f"{hook.name} failed: {type(exc).__name__}: {exc}")
            yield name, result if isinstance(result, _Failed) else list(result or [])

    def _checked(self, reg: Registry, hook: Any, kind: str) -> list[tuple[str, list[Any]]]:
        """A hook's results per plugin, each entry checked; a plugin with a bad one goes to ``reg.broken``."""
        calls: list[tuple[str, list[Any]]] = []
        for plugin, entries in self._calls(hook):
            try:
                if isinstance(entries, _Failed):
                    raise PluginError(f"plugin {plugin!r}: {entries.error}")
                for entry in entries:
                    if kind == "spec model":
                        check_spec_model(entry, plugin)
                    else:
                        check_class(kind, entry, plugin)
            except PluginError as exc:
                if plugin not in reg.broken:
                    reg.broken[plugin] = str(exc)
                    logger.warning("plugin %s is left out: %s", plugin, exc)
                continue
            calls.append((plugin, entries))
        return calls

    def _collect(self) -> Registry:
        reg = Registry()
        hook = self._pm.hook
        # Check every class first, so that a broken plugin is left out whole and the healthy ones still work.
        checked = {
            "spec model": self._checked(reg, hook.aib_register_spec_models, "spec model"),
            "source": self._checked(reg, hook.aib_register_sources, "source"),
            "build host": self._checked(reg, hook.aib_register_build_hosts, "build host"),
            "communicator": self._checked(reg, hook.aib_register_communicators, "communicator"),
            "customizer": self._checked(reg, hook.aib_register_customizers, "customizer"),
            "distributor": self._checked(reg, hook.aib_register_distributors, "distributor"),
        }

        def healthy(kind: str) -> list[tuple[str, list[Any]]]:
            return [(plugin, classes) for plugin, classes in checked[kind] if plugin not in reg.broken]

        for plugin, entries in healthy("spec model"):
            for kind, model in entries:
                reg.add_spec_model(kind, model, plugin)
        for plugin, sources in healthy("source"):
            for cls in sources:
                reg.add_spec_model("source", cls.spec_model, plugin)
                reg.sources.append(cls)
                reg.owner[cls] = plugin
        for plugin, hosts in healthy("build host"):
            for host in hosts:
                reg.add_named(reg.build_hosts, "build host", host, host.name, plugin)
        for plugin, comms in healthy("communicator"):
            for comm in comms:
                reg.add_named(reg.communicators, "communicator", comm, comm.name, plugin)
        for plugin, steps in healthy("customizer"):
            for step in steps:
                reg.add_named(reg.customizers, "customizer", step, step.type_name, plugin)
                if getattr(step, "hidden", False):
                    continue  # the Builder's own last step (deprovision), not a template type
                reg.add_spec_model("customizer", step.spec_model, plugin)
                if step.validator_model is not None:
                    reg.add_spec_model("validator", step.validator_model, plugin)
        for plugin, dists in healthy("distributor"):
            for dist in dists:
                reg.add_spec_model("distributor", dist.spec_model, plugin)
                reg.distributors.append(dist)
                reg.owner[dist] = plugin
        for plugin, releasers in self._calls(hook.aib_register_releasers):
            if isinstance(releasers, _Failed):
                reg.broken.setdefault(plugin, f"plugin {plugin!r}: {releasers.error}")
                continue
            if plugin in reg.broken:
                continue
            for kind, release in releasers:
                reg.add_named(reg.releasers, "releaser for", release, kind, plugin)
        for plugin, stores in self._calls(hook.aib_register_artifact_stores):
            if isinstance(stores, _Failed):
                reg.broken.setdefault(plugin, f"plugin {plugin!r}: {stores.error}")
                continue
            if plugin not in reg.broken:
                for scheme, opener in stores:
                    reg.add_named(reg.artifact_stores, "artifact store for", opener, scheme.lower(), plugin)
        # ``_calls`` yields later registrations (third-party plugins) first, so they are asked before the core.
        return reg

    # Routing -----------------------------------------------------------------------------------------------

    def _routes(self) -> dict[str, list[Implementation]] | None:
        """The catalogue's implementations while routing may import only what it asks for; ``None``: route with the
        :attr:`registry` (collected already, no current catalogue, or a recorded implementation is gone)."""
        if self._registry is not None:
            return None
        found = self._catalog_from_disk()
        if found is None or found.implementations is None:
            return None
        self._warn_broken(found)
        return found.implementations

    def _lazy(self, kind: str, wanted: Callable[[Implementation], bool]) -> list[Any] | None:
        """The catalogue's ``kind`` implementations that are ``wanted``, in the registry's order, importing only
        those; ``None``: route with the :attr:`registry` instead."""
        routes = self._routes()
        if routes is None:
            return None
        from aib_sdk.plugins import catalog

        found: list[Any] = []
        for row in routes.get(kind, []):
            if wanted(row):
                try:
                    obj = catalog.resolve(row.ref)
                except Exception:  # gone or failing since recorded: collect (a broken plugin is left out), record anew
                    self._catalog = False
                    return None
                self._owners[obj] = row.plugin
                found.append(obj)
        return found

    def _named(self, kind: str, name: str) -> list[Any]:
        """The ``kind`` implementations called ``name``, in the registry's order (from the catalogue: importing
        only those)."""
        found = self._lazy(kind, lambda row: row.name == name)
        if found is not None:
            return found
        registry = self.registry
        if kind in ("source", "distributor"):
            listed: list[Any] = registry.sources if kind == "source" else registry.distributors
            return [cls for cls in listed if cls.type_name == name]
        tables: dict[str, dict[str, Any]] = {
            "customizer": registry.customizers,
            "communicator": registry.communicators,
            "build host": registry.build_hosts,
            "releaser": registry.releasers,
        }
        return [tables[kind][name]] if name in tables[kind] else []

    def _owner(self, obj: Any) -> str:
        return self._owners.get(obj) or self.registry.owner[obj]

    def source_for(self, spec: BaseModel, config: Config) -> type[Source]:
        """The first source implementation that claims ``spec``."""
        name = type_name_of(type(spec))
        candidates: list[type[Source]] = self._named("source", name)
        for cls in candidates:
            if cls.claims(spec, config):
                return cls
        if not candidates:
            raise UsageError(
                f"no installed provider builds from source type {name!r}; install a provider that does "
                f"(see 'aib plugins'), or replace the source with --source"
            )
        hints = [hint for cls in candidates if (hint := _unclaimed_hint(cls, spec, config))]
        if hints:
            raise UsageError("\n".join(hints))
        raise UsageError(
            f"no installed provider can resolve this {name} source ({_describe(spec)}); "
            f"use --source with a disk file or URL, or install a provider for it"
        )

    def distributor_for(self, spec: BaseModel, config: Config) -> type[Distributor]:
        """The first distributor implementation that claims ``spec`` (decided by its id/URI)."""
        name = type_name_of(type(spec))
        candidates: list[type[Distributor]] = self._named("distributor", name)
        for cls in candidates:
            if cls.claims(spec, config):
                return cls
        raise UsageError(
            f"no installed provider publishes {name} target {_describe(spec)}"
            + (f" (installed for {name}: {', '.join(self._owner(c) for c in candidates)})" if candidates else "")
        )

    def customizer(self, type_name: str) -> type[Customizer]:
        for found in self._named("customizer", type_name):
            return cast("type[Customizer]", found)
        raise UsageError(f"no installed provider runs step type {type_name!r}")

    def hidden_customizers(self) -> list[type[Customizer]]:
        """The customizers marked ``hidden`` (the Builder's own last steps, e.g. ``Deprovision``), in the
        registry's order (from the catalogue: importing only those)."""
        found = self._lazy("customizer", lambda row: row.hidden)
        if found is not None:
            return found
        return [step for step in self.registry.customizers.values() if getattr(step, "hidden", False)]

    def communicator(self, name: str) -> type[Communicator]:
        for found in self._named("communicator", name):
            return cast("type[Communicator]", found)
        raise UsageError(f"no communicator named {name!r} is installed")

    def releaser(self, kind: str) -> Releaser | None:
        """The release function registered for the journaled resource ``kind`` (``None``: none is installed)."""
        found = self._named("releaser", kind)
        return cast("Releaser", found[0]) if found else None

    def build_host(self, name: str | None, config: Config) -> type[BuildHost]:
        routes = self._routes()
        if routes is not None:
            names = [row.name for row in routes.get("build host", [])]
        else:
            names = list(self.registry.build_hosts)
        if name is not None:
            found: list[type[BuildHost]] = self._named("build host", name) if name in names else []
            if not found:
                raise UsageError(f"no build host named {name!r} (installed: {', '.join(names) or 'none'})")
            return found[0]
        for host_name in names:
            for host in self._named("build host", host_name):
                if host.available(config):
                    return cast("type[BuildHost]", host)
        raise UsageError(
            "no build host can run here"
            + (
                f" (installed: {', '.join(names)}; none is available)"
                if names
                else "; install one, e.g. aib-provider-qemu"
            )
        )


def _unclaimed_hint(cls: Any, spec: BaseModel, config: Config) -> str | None:
    explain = getattr(cls, "explain_unclaimed", None)
    hint = explain(spec, config) if callable(explain) else None
    return hint if isinstance(hint, str) and hint else None


def _describe(spec: BaseModel) -> str:
    data = spec.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
    keys = ("uri", "galleryImageId", "imageId", "imageVersionId", "publisher", "offer", "sku", "runOutputName")
    shown = {k: data[k] for k in keys if k in data}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or type(spec).__name__
