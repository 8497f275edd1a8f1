"""Everything decided before a run starts: the template read and checked, its name, and each entry's provider.

Any problem here is the caller's (:class:`TemplateError`/:class:`UsageError`) and is raised before anything runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from aib_sdk.config import Config
from aib_sdk.errors import MissingParamsError, UsageError
from aib_sdk.models.loader import LoadedTemplate, Unresolved, load_template, read_json_file
from aib_sdk.models.template import TemplateProperties
from aib_sdk.options import BuildOptions, provider_settings
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.plugins.registry import type_name_of
from aib_sdk.profiles import apply_profile_options
from aib_sdk.protocols import BuildHost, Customizer, Distributor, Source
from aib_sdk.redaction import register_config_secrets
from aib_sdk.source_spec import parse_source
from aib_sdk.trust import check_build_context

TemplateInput = str | Path | Mapping[str, Any] | LoadedTemplate
DEFAULT_TIMEOUT_MINUTES = 240


@dataclass
class StepPlan:
    """One customizer or validator entry and the class that runs it."""

    spec: BaseModel
    type_name: str
    runner: type[Customizer]


@dataclass
class TargetPlan:
    """One distribution target and the distributor that publishes it."""

    spec: BaseModel
    type_name: str
    run_output_name: str
    distributor: type[Distributor]


@dataclass
class Plan:
    """A run, fully decided."""

    loaded: LoadedTemplate
    name: str
    options: BuildOptions
    """The effective options: the caller's, with the profile's values filled in and config/plugins set."""
    config: Config
    plugins: PluginManager
    base_directory: Path | None
    source_spec: BaseModel
    source: type[Source]
    host: type[BuildHost]
    steps: list[StepPlan] = field(default_factory=list)
    validations: list[StepPlan] = field(default_factory=list)
    targets: list[TargetPlan] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT_MINUTES * 60.0
    timeout_text: str = ""
    context: Path | None = None
    """The build context local inputs must lie under (:mod:`aib_sdk.trust`); ``None``: not confined."""

    @property
    def digest(self) -> str:
        return self.loaded.digest

    @property
    def source_validation_only(self) -> bool:
        validation = self.loaded.properties.validation
        return bool(validation and validation.source_validation_only)

    @property
    def continue_distribute_on_failure(self) -> bool:
        validation = self.loaded.properties.validation
        return bool(validation and validation.continue_distribute_on_failure)

    @property
    def on_customizer_error(self) -> str:
        handling = self.loaded.properties.error_handling
        return handling.on_customizer_error if handling else "cleanup"

    @property
    def on_validation_error(self) -> str:
        handling = self.loaded.properties.error_handling
        return handling.on_validation_error if handling else "cleanup"


def missing_params_error(unresolved: list[Unresolved]) -> MissingParamsError:
    """One error naming every ``--param NAME=VALUE`` still needed (and expressions that cannot be evaluated)."""
    names: dict[str, list[str]] = {}
    opaque: list[Unresolved] = []
    for item in unresolved:
        if item.kind == "placeholder" or item.names:
            for name in item.names or [item.text]:
                key = next((k for k in names if k.lower() == name.lower()), name)
                names.setdefault(key, []).append(item.path)
        else:
            opaque.append(item)
    lines: list[str] = []
    if names:
        lines.append(f"missing {len(names)} parameter(s); pass them with --param NAME=VALUE:")
        lines += [f"  --param {name}=VALUE   (used at {', '.join(paths)})" for name, paths in names.items()]
    if opaque:
        lines.append("expressions that cannot be evaluated locally (replace them or pass the values):")
        lines += [f"  {item.path}: {item.text}" for item in opaque]
    return MissingParamsError("\n".join(lines), list(names))


async def make_plan(template: TemplateInput, options: BuildOptions) -> Plan:
    """Read, check and route ``template``; raise :class:`TemplateError`/:class:`UsageError` on any problem."""
    config = options.config
    if config is None:
        config = await anyio.to_thread.run_sync(Config.load)
    options, rewrite = apply_profile_options(options, config)
    config = options.config or config  # a profile's network replaces the [qemu] one
    config = config.with_settings(provider_settings(options))  # each provider reads its own table
    register_config_secrets({**config.data, **config.settings}, config.env)
    plugins = options.plugins or PluginManager()
    await anyio.to_thread.run_sync(plugins.load)  # the catalogue (or every plugin), off the event loop
    file: Path | None = None
    if isinstance(template, LoadedTemplate):
        loaded = template
    else:
        if isinstance(template, str | Path):
            file = Path(template).expanduser()
            doc: Any = await anyio.to_thread.run_sync(read_json_file, file)
        else:
            doc = dict(template)
        loaded = load_template(
            doc,
            plugins=plugins,
            params=options.params,
            resource=options.resource,
            profile=rewrite,
            source=await _source_spec(options.source),
        )
    unresolved = loaded.unresolved_used()
    if unresolved:
        raise missing_params_error(unresolved)
    name = loaded.name or options.template_name or (file.stem if file else None) or "template"
    base = options.base_directory or (file.resolve().parent if file else None) or options.context
    context = options.context or (file.resolve().parent if file else None) or options.base_directory
    check_build_context(
        loaded.properties,
        context=context,
        base=base,
        uri_map=options.uri_map,
        include_source=options.source is None,
    )
    props = loaded.properties
    routes = await anyio.to_thread.run_sync(_route, plugins, config, props, options.build_host)
    plan = Plan(
        loaded=loaded,
        name=name,
        options=dataclasses.replace(options, config=config, plugins=plugins),
        config=config,
        plugins=plugins,
        base_directory=base,
        source_spec=props.source,
        source=routes.source,
        host=routes.host,
        steps=routes.steps,
        validations=routes.validations,
        targets=routes.targets,
        context=context,
    )
    if options.timeout is not None:
        if options.timeout <= 0:
            raise UsageError("timeout must be positive")
        plan.timeout, plan.timeout_text = float(options.timeout), f"{options.timeout:g}s (--timeout)"
    else:
        minutes = props.build_timeout_in_minutes or DEFAULT_TIMEOUT_MINUTES
        plan.timeout, plan.timeout_text = minutes * 60.0, f"{minutes} minutes (buildTimeoutInMinutes)"
    return plan


@dataclass
class _Routes:
    source: type[Source]
    host: type[BuildHost]
    steps: list[StepPlan]
    validations: list[StepPlan]
    targets: list[TargetPlan]


def _route(plugins: PluginManager, config: Config, props: TemplateProperties, build_host: str | None) -> _Routes:
    """Each entry's provider (blocking: the providers asked for are imported now, and only those)."""
    source = plugins.source_for(props.source, config)
    host = plugins.build_host(build_host, config)
    steps = [_step(plugins, spec) for spec in props.customize or []]
    validation = props.validation
    validations = [_step(plugins, spec) for spec in (validation.in_vm_validations or [])] if validation else []
    targets: list[TargetPlan] = []
    if not (validation and validation.source_validation_only):
        targets = [
            TargetPlan(spec, type_name_of(type(spec)), _output_name(spec), plugins.distributor_for(spec, config))
            for spec in props.distribute
        ]
    return _Routes(source, host, steps, validations, targets)


async def _source_spec(value: Mapping[str, Any] | str | Path | None) -> Mapping[str, Any] | None:
    """``BuildOptions.source``: a spec as is; JSON text or a disk path/URL read as ``aib build --source`` reads it."""
    if value is None or isinstance(value, Mapping):
        return value
    return await parse_source(str(value))


def _step(plugins: PluginManager, spec: BaseModel) -> StepPlan:
    name = type_name_of(type(spec))
    return StepPlan(spec, name, plugins.customizer(name))


def _output_name(spec: BaseModel) -> str:
    value = getattr(spec, "run_output_name", None)
    return value if isinstance(value, str) else type_name_of(type(spec))
