"""What the installed plugins provide, collected once per manager, with duplicates rejected."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aib_sdk.errors import PluginError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from aib_sdk.journal import Releaser
    from aib_sdk.protocols import BlobStoreOpener, BuildHost, Communicator, Customizer, Distributor, Source

SpecKind = Literal["source", "customizer", "validator", "distributor"]
SPEC_KINDS: tuple[SpecKind, ...] = ("source", "customizer", "validator", "distributor")

REQUIRED_MEMBERS: dict[str, tuple[str, ...]] = {
    "source": ("type_name", "spec_model", "claims", "resolve"),
    "customizer": ("type_name", "spec_model", "validator_model", "run"),
    "distributor": ("type_name", "spec_model", "claims", "publish"),
    "build host": ("name", "available", "start"),
    "communicator": ("name", "run", "upload", "download", "boot_id", "wait_rebooted", "aclose"),
}
"""What each kind of registered class must have (the protocol's members; :mod:`aib_sdk.bases` provides them)."""


def check_spec_model(entry: Any, plugin: str) -> None:
    """Refuse an ``aib_register_spec_models`` entry that is not ``(kind, model)`` with a usable model."""
    from pydantic import BaseModel

    kind, model = entry if isinstance(entry, tuple) and len(entry) == 2 else (None, None)
    if kind not in SPEC_KINDS or not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginError(f"plugin {plugin!r}: spec model entry {entry!r} is not (kind, pydantic model)")
    try:
        type_name_of(model)
    except PluginError as exc:
        raise PluginError(f"plugin {plugin!r}: {exc}") from None


def check_class(kind: str, cls: Any, plugin: str) -> None:
    """Refuse a registered class that is not a class, lacks a required member or has an unusable spec model,
    with a :class:`PluginError` naming the plugin, the class and the member."""
    from pydantic import BaseModel

    name = getattr(cls, "__qualname__", repr(cls))
    if not isinstance(cls, type):
        raise PluginError(f"plugin {plugin!r}: registered {kind} {name} is not a class")
    abstract: frozenset[str] = getattr(cls, "__abstractmethods__", frozenset())  # a base's member left unimplemented
    missing = [member for member in REQUIRED_MEMBERS[kind] if not hasattr(cls, member) or member in abstract]
    if missing:
        listed = ", ".join(repr(m) for m in missing)
        plural = "s" if len(missing) > 1 else ""
        raise PluginError(f"plugin {plugin!r}: {kind} {name} lacks the required member{plural} {listed}")
    members: dict[str, Any] = {member: getattr(cls, member) for member in REQUIRED_MEMBERS[kind]}
    models = [members["spec_model"]] if "spec_model" in members else []
    if members.get("validator_model") is not None:
        models.append(members["validator_model"])
    for model in models:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise PluginError(f"plugin {plugin!r}: {kind} {name}: spec model {model!r} is not a pydantic model")
        try:
            type_name_of(model)
        except PluginError as exc:
            raise PluginError(f"plugin {plugin!r}: {kind} {name}: {exc}") from None


def type_name_of(model: type[BaseModel]) -> str:
    """The discriminator value of a spec model: the single ``Literal`` of its ``type`` field."""
    info = model.model_fields.get("type")
    if info is None:
        raise PluginError(f"{model.__qualname__} has no 'type' field")
    args = typing.get_args(info.annotation)
    if typing.get_origin(info.annotation) is not Literal or len(args) != 1 or not isinstance(args[0], str):
        raise PluginError(f"{model.__qualname__}.type must be annotated Literal['<TypeName>']")
    return args[0]


@dataclass
class Registry:
    """Everything registered, keyed for lookup. ``owner`` maps each registered object to its plugin's name."""

    spec_models: dict[SpecKind, dict[str, type[BaseModel]]] = field(
        default_factory=lambda: {kind: {} for kind in SPEC_KINDS}
    )
    sources: list[type[Source]] = field(default_factory=list)
    build_hosts: dict[str, type[BuildHost]] = field(default_factory=dict)
    communicators: dict[str, type[Communicator]] = field(default_factory=dict)
    customizers: dict[str, type[Customizer]] = field(default_factory=dict)
    distributors: list[type[Distributor]] = field(default_factory=list)
    owner: dict[Any, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    """Plugins left out because a class they registered failed :func:`check_class` (plugin → error)."""
    releasers: dict[str, Releaser] = field(default_factory=dict)
    """Journaled resource kind → its release function (hook ``aib_register_releasers``)."""
    artifact_stores: dict[str, BlobStoreOpener] = field(default_factory=dict)
    """URI scheme → the opener of its artifact store backend (hook ``aib_register_artifact_stores``)."""

    def add_spec_model(self, kind: SpecKind, model: type[BaseModel], plugin: str) -> None:
        name = type_name_of(model)
        existing = self.spec_models[kind].get(name)
        if existing is not None and existing is not model:
            raise PluginError(
                f"duplicate {kind} type {name!r}: provided by {self.owner.get(existing, '?')} "
                f"({existing.__module__}.{existing.__qualname__}) and {plugin} "
                f"({model.__module__}.{model.__qualname__})"
            )
        if existing is None:
            self.spec_models[kind][name] = model
            self.owner[model] = plugin

    def add_named(self, table: dict[str, Any], what: str, cls: Any, name: str, plugin: str) -> None:
        existing = table.get(name)
        if existing is not None and existing is not cls:
            raise PluginError(f"duplicate {what} {name!r}: provided by {self.owner.get(existing, '?')} and {plugin}")
        table[name] = cls
        self.owner[cls] = plugin

    def types_by_plugin(self) -> dict[str, list[str]]:
        """Plugin name → the ``kind:Type`` entries it provides (for ``aib plugins``)."""
        out: dict[str, list[str]] = {}

        def add(plugin: str, entry: str) -> None:
            entries = out.setdefault(plugin, [])
            if entry not in entries:
                entries.append(entry)

        for kind, models in self.spec_models.items():
            for name, model in models.items():
                add(self.owner.get(model, "?"), f"{kind}:{name}")
        for src in self.sources:
            add(self.owner.get(src, "?"), f"source:{src.type_name}")
        for dist in self.distributors:
            add(self.owner.get(dist, "?"), f"distributor:{dist.type_name}")
        for name, host in self.build_hosts.items():
            add(self.owner.get(host, "?"), f"build-host:{name}")
        for name, comm in self.communicators.items():
            add(self.owner.get(comm, "?"), f"communicator:{name}")
        for name, step in self.customizers.items():
            add(self.owner.get(step, "?"), f"customizer:{name}")
        return out
