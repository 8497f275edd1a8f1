"""The installed plugins' spec models and type listing, cached on disk under ``<AIB_CACHE>/plugins/``.

``aib validate``, ``aib schema`` and ``aib plugins`` need only the template models and the names of the types each
plugin provides, but collecting them means importing every plugin's implementation (tens of milliseconds per
provider). The catalogue records once, from a fully collected registry, where each spec model lives
(``module:qualname``) and what ``aib plugins`` lists; later runs import the spec models' modules only. It records
where each implementation lives too (sources, distributors, build hosts, communicators, customizers, releasers, in
the registry's order), so that ``aib build`` routes a template importing only the providers it asks (see
:meth:`~aib_sdk.plugins.manager.PluginManager.source_for`).

The catalogue is used only when it still describes this installation: its key covers the interpreter, every
``aib_sdk`` entry point with its distribution's version, and the block-list; and the size and mtime of every source
file of the packages involved (the core, each plugin, each spec model's package) must match, so an edited editable
install is noticed. Anything else (a stale, unreadable or foreign file) means "collect again"; a catalogue is never
an error.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aib_sdk.plugins import PROJECT

if TYPE_CHECKING:
    from pydantic import BaseModel

    from aib_sdk.plugins.registry import Registry

FORMAT = 2


@dataclass(frozen=True)
class Implementation:
    """A registered implementation: its name (type name, host/communicator name, journal kind), where it lives
    (``module:qualname``), its plugin, and for customizers whether it is ``hidden`` (the Builder's own last step)."""

    name: str
    ref: str
    plugin: str
    hidden: bool = False


@dataclass(frozen=True)
class Catalog:
    """A collected registry's spec models (``kind → type → (module:qualname, plugin)``) and ``aib plugins`` data."""

    spec_models: dict[str, dict[str, tuple[str, str]]]
    types_by_plugin: dict[str, list[str]]
    digest: str = ""
    """sha256 of the catalogue file: what derived caches (the template schema) are keyed by."""
    broken: dict[str, str] = field(default_factory=dict)
    """Plugins left out at collection (plugin → error), so listings and warnings need no collection."""
    implementations: dict[str, list[Implementation]] | None = None
    """Kind → its implementations in the registry's order (``None``: one is not importable by name)."""


def cache_file(env: Mapping[str, str] | None = None) -> Path:
    """This interpreter's catalogue file (one per environment: several venvs share one cache directory)."""
    from aib_sdk.config import Config

    tag = hashlib.sha256(f"{sys.prefix}\0{sys.version}".encode()).hexdigest()[:16]
    return Config(env=env).cache / "plugins" / f"catalog-{tag}.json"


def installation_key(disabled: Iterable[str]) -> tuple[str, list[str]]:
    """The key of the installed entry points (with their distributions' versions), and their top-level packages."""
    from importlib.metadata import entry_points

    rows: list[str] = [sys.version, ",".join(sorted(disabled))]
    packages = ["aib_sdk"]
    for ep in sorted(entry_points(group=PROJECT), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        rows.append(f"{ep.name}={ep.value}@{getattr(dist, 'version', None)}")
        packages.append(ep.value.split(":", 1)[0].split(".", 1)[0])
    return hashlib.sha256("\n".join(rows).encode()).hexdigest(), sorted(set(packages))


def fingerprint(packages: Iterable[str]) -> dict[str, str]:
    """Per top-level package: a digest of its source files' paths, sizes and mtimes (``""`` when not found)."""
    from importlib.util import find_spec

    out: dict[str, str] = {}
    for package in sorted(set(packages)):
        digest = hashlib.sha256()
        try:
            spec = find_spec(package)
        except (ImportError, ValueError):
            spec = None
        roots = list(spec.submodule_search_locations or []) if spec is not None else []
        if spec is not None and not roots and spec.origin:
            roots = [spec.origin]
        for root in roots:
            for path, stat in _sources(root):
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        out[package] = digest.hexdigest() if roots else ""
    return out


def _sources(root: str) -> list[tuple[str, os.stat_result]]:
    top = Path(root)
    if top.is_file():
        return [(root, top.stat())]
    found: list[tuple[str, os.stat_result]] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".py", ".pyi")) or name == "py.typed":
                path = Path(directory, name)
                found.append((str(path), path.stat()))
    return found


def _ref(model: type[BaseModel]) -> str:
    return f"{model.__module__}:{model.__qualname__}"


def resolve(ref: str) -> Any:
    """The object a ``module:qualname`` reference names (importing the module)."""
    module_name, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def load(disabled: Iterable[str], env: Mapping[str, str] | None = None) -> Catalog | None:
    """The stored catalogue when it describes this installation, else ``None``."""
    try:
        raw = cache_file(env).read_bytes()
        data = json.loads(raw)
        key, _ = installation_key(disabled)
        if data.get("format") != FORMAT or data.get("key") != key:
            return None
        stored = data["packages"]
        if not isinstance(stored, dict) or fingerprint(stored) != stored:
            return None
        return Catalog(
            spec_models={
                kind: {name: (str(entry[0]), str(entry[1])) for name, entry in models.items()}
                for kind, models in data["spec_models"].items()
            },
            types_by_plugin={plugin: [str(e) for e in entries] for plugin, entries in data["types"].items()},
            digest=hashlib.sha256(raw).hexdigest(),
            broken={str(plugin): str(error) for plugin, error in data.get("broken", {}).items()},
            implementations=_read_implementations(data.get("implementations")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None


def save(registry: Registry, disabled: Iterable[str], env: Mapping[str, str] | None = None) -> bool:
    """Store ``registry``'s catalogue (atomically; quietly not when a model is not importable by name)."""
    key, packages = installation_key(disabled)
    spec_models: dict[str, dict[str, tuple[str, str]]] = {}
    for kind, models in registry.spec_models.items():
        spec_models[kind] = {}
        for name, model in models.items():
            ref = _ref(model)
            try:
                if resolve(ref) is not model:
                    return False  # made at run time (create_model …): not importable by name
            except (ImportError, AttributeError):
                return False
            spec_models[kind][name] = (ref, registry.owner.get(model, "?"))
            packages.append(model.__module__.split(".", 1)[0])
    implementations = _implementations(registry)
    for rows in (implementations or {}).values():
        packages += [row.ref.split(".", 1)[0].split(":", 1)[0] for row in rows]
    data = {
        "format": FORMAT,
        "key": key,
        "packages": fingerprint(packages),
        "spec_models": spec_models,
        "types": registry.types_by_plugin(),
        "broken": dict(registry.broken),
        "implementations": (
            None
            if implementations is None
            else {kind: [[r.name, r.ref, r.plugin, r.hidden] for r in rows] for kind, rows in implementations.items()}
        ),
    }
    file = cache_file(env)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")  # order kept: listings follow it
        tmp.replace(file)
    except OSError:
        return False
    return True


def _implementations(registry: Registry) -> dict[str, list[Implementation]] | None:
    """Every implementation of ``registry`` in its order; ``None`` when one is not importable by name."""
    tables: dict[str, list[tuple[str, Any]]] = {
        "source": [(cls.type_name, cls) for cls in registry.sources],
        "distributor": [(cls.type_name, cls) for cls in registry.distributors],
        "build host": list(registry.build_hosts.items()),
        "communicator": list(registry.communicators.items()),
        "customizer": list(registry.customizers.items()),
        "releaser": list(registry.releasers.items()),
    }
    out: dict[str, list[Implementation]] = {}
    for kind, rows in tables.items():
        out[kind] = []
        for name, obj in rows:
            ref = f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"
            try:
                if resolve(ref) is not obj:
                    return None
            except (ImportError, AttributeError, ValueError):
                return None
            hidden = kind == "customizer" and bool(getattr(obj, "hidden", False))
            out[kind].append(Implementation(name, ref, registry.owner.get(obj, "?"), hidden))
    return out


def _read_implementations(raw: Any) -> dict[str, list[Implementation]] | None:
    if raw is None:
        return None
    return {
        str(kind): [Implementation(str(n), str(ref), str(plugin), bool(hidden)) for n, ref, plugin, hidden in rows]
        for kind, rows in dict(raw).items()
    }


def _schema_file(env: Mapping[str, str] | None) -> Path:
    file = cache_file(env)
    return file.with_name(file.name.replace("catalog-", "schema-", 1))


def load_schema(catalog: Catalog, env: Mapping[str, str] | None = None) -> str | None:
    """The template JSON Schema (text) made from this very catalogue, if stored."""
    try:
        data = json.loads(_schema_file(env).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("catalog") != catalog.digest or not isinstance(data.get("text"), str):
        return None
    return str(data["text"])


def save_schema(catalog: Catalog, text: str, env: Mapping[str, str] | None = None) -> None:
    """Store the template JSON Schema made from ``catalog`` (atomically; quietly not on an OS error)."""
    file = _schema_file(env)
    try:
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"catalog": catalog.digest, "text": text}), encoding="utf-8")
        tmp.replace(file)
    except OSError:
        pass


def spec_registry(catalog: Catalog) -> Registry | None:
    """A registry holding only the catalogue's spec models (their modules imported), or ``None`` if one is gone."""
    from pydantic import BaseModel

    from aib_sdk.plugins.registry import SPEC_KINDS, Registry

    reg = Registry()
    try:
        for kind in SPEC_KINDS:
            target: dict[str, type[BaseModel]] = reg.spec_models[kind]
            for name, (ref, plugin) in catalog.spec_models.get(kind, {}).items():
                model = resolve(ref)
                if not (isinstance(model, type) and issubclass(model, BaseModel)):
                    return None
                target[name] = model
                reg.owner[model] = plugin
    except (ImportError, AttributeError):
        return None
    return reg


__all__ = [
    "Catalog",
    "Implementation",
    "cache_file",
    "fingerprint",
    "load",
    "load_schema",
    "resolve",
    "save",
    "save_schema",
    "spec_registry",
]
