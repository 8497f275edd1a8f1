"""The values that flow between providers: base disks, captured artifacts, run outputs, command results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DiskFormat = Literal["qcow2", "raw", "vpc", "vmdk"]
OsType = Literal["Linux", "Windows"]
HyperVGeneration = Literal["V1", "V2"]
DiskInterface = Literal["virtio", "nvme", "scsi", "ide"]


@dataclass(frozen=True)
class SavedState:
    """A build VM's RAM and device state, kept by the step cache with a disk layer, that a build host may resume
    instead of booting that layer (see :class:`aib_sdk.protocols.LayeredMachine`).

    ``state`` is in the host's own format (QEMU: a migration stream); ``access`` is a 0600 file with what
    reconnecting to the saved guest needs (its client key, pinned host keys); ``shape`` is the digest of the VM it
    was saved from (a host resumes only an identical VM); ``boot_id`` is the guest's boot id when it was saved (a
    resumed guest must show it); ``layer`` is the layer's key (for messages).
    """

    state: Path
    access: Path
    shape: str
    boot_id: str
    layer: str


@dataclass
class StateRequest:
    """Where a machine's :meth:`~aib_sdk.protocols.LayeredMachine.snapshot` may save its RAM state with a layer;
    the machine fills ``shape`` and ``boot_id`` when it did, or ``refusal`` (why not) when it could not."""

    state: Path
    access: Path
    shape: str = ""
    boot_id: str = ""
    refusal: str = ""

    @property
    def saved(self) -> bool:
        return bool(self.shape)


@dataclass(frozen=True)
class DiskImage:
    """A bootable base disk resolved from a template's ``source``, on local disk.

    ``exact_version`` is what the source resolved to (``latest`` → a concrete version), reported as
    ``source.exactVersion`` in the run result. ``kernel``/``initrd``/``kernel_args`` enable direct kernel boot
    for disks without a bootloader. ``access`` says how the guest takes the build key: ``"cloud-init"`` (a NoCloud
    seed) or ``"static"`` (credentials from provider settings). ``attributes`` carries provider-specific facts
    (for example the tiny test guest's pinned host keys) without widening this contract. ``saved_state``: the
    step cache found a RAM state of this disk (a layer) that the host may resume instead of booting; a host that
    cannot (or finds it unusable) boots the disk.
    """

    path: Path
    format: DiskFormat
    os_type: OsType = "Linux"
    hyper_v_generation: HyperVGeneration = "V1"
    sha256: str | None = None
    exact_version: str | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    kernel_args: str | None = None
    disk_interface: DiskInterface = "virtio"
    access: Literal["cloud-init", "static"] = "cloud-init"
    attributes: dict[str, str] = field(default_factory=dict)
    saved_state: SavedState | None = None


@dataclass
class Artifact:
    """The captured disk of a finished build, ready to be published.

    ``path`` is a standalone disk (no backing file) owned by the run's staging area. Distributors that need
    another format ask :func:`aib_sdk.disks.converted` with this artifact; conversions are cached per artifact,
    so three distributors that want a VHD convert once.
    """

    path: Path
    format: DiskFormat
    virtual_size: int
    os_type: OsType = "Linux"
    hyper_v_generation: HyperVGeneration = "V1"
    sha256: str | None = None
    source_version: str | None = None
    template_digest: str = ""
    run_id: str = ""
    template_name: str = ""
    source_image: DiskImage | None = None
    """The base image this artifact was built from: its boot facts (direct kernel boot, disk interface, access)
    still apply to the artifact, so a gallery that stores it can boot it again as a source."""
    conversions: dict[str, Path] = field(default_factory=dict)
    digests: dict[Path, str] = field(default_factory=dict)
    """sha256 of the artifact's files (itself and its conversions), filled by :func:`aib_sdk.disks.artifact_sha256`."""


ProvisioningState = Literal["Succeeded", "Failed", "Running", "Canceled"]


@dataclass
class RunOutput:
    """What one distribution target produced, as AIB's ``runOutputs/{name}`` resource reports it."""

    run_output_name: str
    artifact_id: str | None = None
    artifact_uri: str | None = None
    provisioning_state: ProvisioningState = "Succeeded"
    error: str | None = None
    regions: dict[str, str] = field(default_factory=dict)  # region → URI/location of its replica

    def to_dict(self) -> dict[str, object]:
        return {
            "artifactId": self.artifact_id,
            "artifactUri": self.artifact_uri,
            "provisioningState": self.provisioning_state,
        }


@dataclass(frozen=True)
class CommandResult:
    """The outcome of one command run on the guest."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0
