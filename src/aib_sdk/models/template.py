"""The whole template's ``properties`` model, built per plugin registry so providers' own types validate."""

from __future__ import annotations

import json
import weakref
from typing import Annotated, Any, Self, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    create_model,
    field_validator,
    model_validator,
)

from aib_sdk.models.placeholders import is_unresolved
from aib_sdk.models.specs import (
    AibModel,
    AutoRun,
    DataDisk,
    DistributorSpec,
    ErrorHandling,
    Optimize,
    VmProfile,
    rule_error,
)
from aib_sdk.plugins.registry import Registry, SpecKind, type_name_of


class ValidateSpec(AibModel):
    """``properties.validate``: in-VM validations after customization."""

    continue_distribute_on_failure: bool = False
    source_validation_only: bool = False
    in_vm_validations: list[BaseModel] | None = Field(default=None, alias="inVMValidations")


class TemplateProperties(AibModel):
    """``properties`` of an image template. Use :func:`build_properties_model` for a registry's concrete model."""

    source: BaseModel
    customize: list[BaseModel] | None = None
    validation: ValidateSpec | None = Field(default=None, alias="validate")
    distribute: list[DistributorSpec] = Field(min_length=1)
    optimize: Optimize | None = None
    error_handling: ErrorHandling | None = None
    build_timeout_in_minutes: int = 0
    vm_profile: VmProfile | None = None
    additional_data_disks: list[DataDisk] | None = None
    staging_resource_group: str | None = None
    auto_run: AutoRun | None = None
    managed_resource_tags: dict[str, str] | None = None
    # Read-only fields of a REST response: accepted and ignored.
    provisioning_state: Any = Field(default=None, exclude=True)
    provisioning_error: Any = Field(default=None, exclude=True)
    last_run_status: Any = Field(default=None, exclude=True)
    exact_staging_resource_group: Any = Field(default=None, exclude=True)

    @field_validator("build_timeout_in_minutes")
    @classmethod
    def _timeout(cls, value: int) -> int:
        if value != 0 and not 6 <= value <= 960:
            raise ValueError("buildTimeoutInMinutes must be 0 (the default, 240) or 6 to 960")
        return value

    @model_validator(mode="after")
    def _unique_outputs(self) -> Self:
        seen: set[str] = set()
        for index, target in enumerate(self.distribute):
            name = getattr(target, "run_output_name", None)
            if not isinstance(name, str):
                continue
            if name in seen and not is_unresolved(name):
                raise rule_error(f"distribute[{index}].runOutputName", f"runOutputName {name!r} is used twice")
            seen.add(name)
        return self


_CACHE: dict[int, tuple[weakref.ref[Registry], type[TemplateProperties]]] = {}


def _union(registry: Registry, kind: SpecKind) -> Any:
    models = list(registry.spec_models[kind].values())
    if not models:
        # Nothing registered: any entry fails with "unknown … type".
        def refuse(value: Any) -> Any:
            name = value.get("type") if isinstance(value, dict) else None
            raise rule_error("type", f"unknown {kind} type {json.dumps(name)} (installed: none)")

        return Annotated[Any, AfterValidator(refuse)]
    if len(models) == 1:
        return models[0]
    for model in models:
        type_name_of(model)  # fails early on a malformed plugin model
    return Annotated[Union[tuple(models)], Discriminator("type")]  # noqa: UP007


def _list_of(item: Any, *, optional: bool) -> Any:
    list_type: Any = list[item]
    return list_type | None if optional else list_type


def build_properties_model(registry: Registry) -> type[TemplateProperties]:
    """The concrete ``properties`` model for ``registry``'s source/customizer/validator/distributor types."""
    cached = _CACHE.get(id(registry))
    if cached is not None and cached[0]() is registry:
        return cached[1]
    validator_union = _union(registry, "validator")
    validate_model: type[ValidateSpec] = create_model(
        "ValidateSpec",
        __base__=ValidateSpec,
        in_vm_validations=(_list_of(validator_union, optional=True), Field(default=None, alias="inVMValidations")),
    )
    model: type[TemplateProperties] = create_model(
        "TemplateProperties",
        __base__=TemplateProperties,
        source=(_union(registry, "source"), ...),
        customize=(_list_of(_union(registry, "customizer"), optional=True), None),
        validation=(validate_model | None, Field(default=None, alias="validate")),
        distribute=(_list_of(_union(registry, "distributor"), optional=False), Field(min_length=1)),
    )
    key = id(registry)
    _CACHE[key] = (weakref.ref(registry, lambda _ref: _CACHE.pop(key, None)), model)
    return model


class TemplateResource(AibModel):
    """The ARM envelope of an image template (for the JSON Schema; the loader checks envelopes itself)."""

    model_config = ConfigDict(extra="allow")

    type: str | None = None
    api_version: str | None = None
    name: str | None = None
    location: str | None = None
    tags: dict[str, str] | None = None
    identity: dict[str, Any] | None = None
    depends_on: list[str] | None = None
    id: str | None = None
    system_data: dict[str, Any] | None = None
    properties: TemplateProperties


ENVELOPE_FIELDS = frozenset(
    {"type", "apiVersion", "name", "location", "tags", "identity", "dependsOn", "id", "systemData", "properties"}
)
# ARM resource keywords that may appear on any resource of a deployment.
ARM_RESOURCE_FIELDS = frozenset({"comments", "condition", "copy", "scope", "kind", "plan", "sku", "zones"})
