"""AIB's template entry types (API 2024-02-01 plus 2025-10-01's additions), one pydantic model each.

Python attributes are snake_case; templates are read and written only by AIB's exact camelCase names
(``scriptUri``, ``osDiskSizeGB``, ``inVMValidations``). Unknown fields are rejected. Each entry model's ``type``
field is a one-value ``Literal``: the discriminator of its union, which providers extend with their own types.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from aib_sdk.models.placeholders import is_unresolved

NAME_PATTERN = re.compile(r"^[A-Za-z0-9-_.]{1,64}$")
_SHA256 = re.compile(r"^[0-9A-Fa-f]{64}$")
_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def rule_error(field: str, message: str) -> PydanticCustomError:
    """A broken AIB rule, reported at ``field`` (a camelCase name) of the model being validated."""
    return PydanticCustomError("aib_rule", message, {"field": field})


def _check_name(value: str) -> str:
    if not is_unresolved(value) and not NAME_PATTERN.match(value):
        raise PydanticCustomError(
            "aib_pattern", "must match ^[A-Za-z0-9-_.]{1,64}$ (letters, digits, '-', '_', '.'; at most 64)"
        )
    return value


def _check_sha256(value: str) -> str:
    if value and not is_unresolved(value) and not _SHA256.match(value):
        raise PydanticCustomError("aib_pattern", "sha256Checksum must be 64 hexadecimal digits (or empty)")
    return value


def _check_duration(value: str) -> str:
    if value and not is_unresolved(value) and not _DURATION.match(value):
        raise PydanticCustomError("aib_pattern", "must be a duration such as 5m, 90s or 1h30m")
    return value


def _set(value: Any) -> bool:
    return value is not None and value != "" and value != []


RunOutputName = Annotated[str, AfterValidator(_check_name)]
Sha256 = Annotated[str, AfterValidator(_check_sha256)]
Duration = Annotated[str, AfterValidator(_check_duration)]


class AibModel(BaseModel):
    """Base of every template model: camelCase names only, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        extra="forbid",
        defer_build=True,  # validators are made on first use: the template model makes the ones it holds at once
    )


# Sources -----------------------------------------------------------------------------------------------------


class PlanInfo(AibModel):
    plan_name: str
    plan_product: str
    plan_publisher: str


class PlatformImageSource(AibModel):
    type: Literal["PlatformImage"]
    publisher: str | None = None
    offer: str | None = None
    sku: str | None = None
    version: str | None = None
    plan_info: PlanInfo | None = None
    exact_version: str | None = None


class ManagedImageSource(AibModel):
    type: Literal["ManagedImage"]
    image_id: str


class SharedImageVersionSource(AibModel):
    type: Literal["SharedImageVersion"]
    image_version_id: str
    exact_version: str | None = None


# Customizers (and in-VM validators, which share their fields) --------------------------------------------------


class StepSpec(AibModel):
    """Common fields of a customizer/validator."""

    name: str | None = None


class ScriptStep(StepSpec):
    script_uri: str | None = None
    sha256_checksum: Sha256 = ""
    inline: list[str] | None = None

    @model_validator(mode="after")
    def _one_script(self) -> Self:
        has_uri, has_inline = _set(self.script_uri), _set(self.inline)
        if has_uri and has_inline:
            raise PydanticCustomError(
                "aib_no_script", "set only one of scriptUri and inline, not both", {"field": "inline"}
            )
        if not has_uri and not has_inline:
            raise PydanticCustomError(
                "aib_no_script", "exactly one of scriptUri or inline is required", {"field": "scriptUri"}
            )
        return self


class ShellCustomizer(ScriptStep):
    type: Literal["Shell"]


class PowerShellCustomizer(ScriptStep):
    type: Literal["PowerShell"]
    run_elevated: bool = False
    run_as_system: bool = False
    valid_exit_codes: list[int] | None = None

    @model_validator(mode="after")
    def _system_needs_elevated(self) -> Self:
        if self.run_as_system and not self.run_elevated:
            raise rule_error("runAsSystem", "runAsSystem requires runElevated: true")
        return self


class FileCustomizer(StepSpec):
    type: Literal["File"]
    source_uri: str | None = None
    sha256_checksum: Sha256 = ""
    destination: str | None = None

    @model_validator(mode="after")
    def _needs_source_and_destination(self) -> Self:
        if not _set(self.source_uri):
            raise rule_error("sourceUri", "File needs sourceUri (the file to copy)")
        if not _set(self.destination):
            raise rule_error("destination", "File needs destination (the full path in the VM)")
        return self


class WindowsRestartCustomizer(StepSpec):
    type: Literal["WindowsRestart"]
    restart_command: str | None = None
    restart_check_command: str | None = None
    restart_timeout: Duration | None = None


class WindowsUpdateCustomizer(StepSpec):
    type: Literal["WindowsUpdate"]
    search_criteria: str | None = None
    filters: list[str] | None = None
    update_limit: int | None = Field(default=None, ge=0)


# Distributors ---------------------------------------------------------------------------------------------------


class DistributorSpec(AibModel):
    """Common fields of a distribution target."""

    run_output_name: RunOutputName
    artifact_tags: dict[str, str] | None = None


class TargetRegion(AibModel):
    name: str
    replica_count: int = Field(default=1, ge=1)
    storage_account_type: Literal["Standard_LRS", "Standard_ZRS", "Premium_LRS"] | None = None


class LatestVersioning(AibModel):
    scheme: Literal["Latest"]
    major: int = Field(default=-1, ge=-1)


class SourceVersioning(AibModel):
    scheme: Literal["Source"]


Versioning = Annotated[LatestVersioning | SourceVersioning, Discriminator("scheme")]


class ManagedImageDistributor(DistributorSpec):
    type: Literal["ManagedImage"]
    image_id: str
    location: str


class SharedImageDistributor(DistributorSpec):
    type: Literal["SharedImage"]
    gallery_image_id: str
    replication_regions: list[str] | None = None
    target_regions: list[TargetRegion] | None = None
    exclude_from_latest: bool = False
    storage_account_type: Literal["Standard_LRS", "Standard_ZRS", "Premium_LRS"] | None = None
    versioning: Versioning | None = None
    replication_mode: Literal["Full", "Shallow"] | None = None

    @model_validator(mode="after")
    def _regions(self) -> Self:
        if self.target_regions is not None and self.replication_regions is not None:
            raise rule_error(
                "replicationRegions",
                "targetRegions and replicationRegions are mutually exclusive (replicationRegions is deprecated)",
            )
        if self.storage_account_type is not None and self.replication_regions is None:
            raise rule_error(
                "storageAccountType",
                "storageAccountType is only allowed with replicationRegions (use targetRegions[].storageAccountType)",
            )
        return self


class VhdDistributor(DistributorSpec):
    type: Literal["VHD"]
    uri: str | None = None


class DiskFileDistributor(DistributorSpec):
    """Not AIB's: a local disk file in any format (``file:///abs/out.qcow2``)."""

    type: Literal["DiskFile"]
    uri: str
    format: Literal["qcow2", "raw", "vpc", "vmdk"] = "qcow2"
    compression: Literal["none", "zstd", "zlib"] = "none"


# Template-level parts ------------------------------------------------------------------------------------------


class VnetConfig(AibModel):
    subnet_id: str | None = None
    container_instance_subnet_id: str | None = None
    proxy_vm_size: str | None = None

    @model_validator(mode="after")
    def _isolated(self) -> Self:
        if _set(self.container_instance_subnet_id):
            if not _set(self.subnet_id):
                raise rule_error("containerInstanceSubnetId", "containerInstanceSubnetId requires subnetId")
            if _set(self.proxy_vm_size):
                raise rule_error(
                    "proxyVmSize", "proxyVmSize must not be set with containerInstanceSubnetId (no proxy VM is used)"
                )
        return self


class VmProfile(AibModel):
    vm_size: str = ""
    os_disk_size_gb: int = Field(default=0, ge=0, alias="osDiskSizeGB")
    user_assigned_identities: list[str] | None = None
    vnet_config: VnetConfig | None = None


class DataDisk(AibModel):
    size_gb: int = Field(ge=0, alias="sizeGB")


class ErrorHandling(AibModel):
    on_customizer_error: Literal["cleanup", "abort"] = "cleanup"
    on_validation_error: Literal["cleanup", "abort"] = "cleanup"


class VmBoot(AibModel):
    state: Literal["Enabled", "Disabled"] = "Enabled"


class WorkloadOptimization(AibModel):
    state: Literal["Enabled", "Disabled"] = "Enabled"
    script_uri: str | None = None
    sha256_checksum: Sha256 = ""


class Optimize(AibModel):
    vm_boot: VmBoot | None = None
    workload: WorkloadOptimization | None = None


class AutoRun(AibModel):
    state: Literal["Enabled", "Disabled"] = "Disabled"


AIB_SOURCES: tuple[type[BaseModel], ...] = (PlatformImageSource, ManagedImageSource, SharedImageVersionSource)
AIB_CUSTOMIZERS: tuple[type[BaseModel], ...] = (
    ShellCustomizer,
    PowerShellCustomizer,
    FileCustomizer,
    WindowsRestartCustomizer,
    WindowsUpdateCustomizer,
)
AIB_VALIDATORS: tuple[type[BaseModel], ...] = (ShellCustomizer, PowerShellCustomizer, FileCustomizer)
AIB_DISTRIBUTORS: tuple[type[BaseModel], ...] = (
    ManagedImageDistributor,
    SharedImageDistributor,
    VhdDistributor,
    DiskFileDistributor,
)
