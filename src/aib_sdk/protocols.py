"""The contracts providers implement. All I/O is async.

Plugins register *classes* (see :mod:`aib_sdk.plugins.hookspecs`). Each class carries a ``type_name`` (the
AIB ``type`` it handles, the discriminator value in templates) and a ``spec_model`` (the pydantic model of one
template entry of that type). Classes are instantiated with no arguments; everything a call needs comes in its
:class:`~aib_sdk.context.RunContext`.

Several implementations may share one ``type_name`` (AIB's ``VHD`` goes to a file, S3 or Azure): the Builder
asks each candidate's ``claims(spec, config)`` in plugin order and uses the first that says yes.

``Source``, ``Customizer`` and ``Distributor`` are generic over the entry's model (``Source[MySpec]``); bare, they
accept any model. :mod:`aib_sdk.bases` has base classes that implement them with every optional member defaulted.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel
from typing_extensions import TypeVar

from aib_sdk.artifacts import Artifact, CommandResult, DiskImage, OsType, RunOutput

if TYPE_CHECKING:
    from aib_sdk.config import Config
    from aib_sdk.context import RunContext, StepContext

OutputHandler = Callable[[str, str], None]
"""Receives ``(stream, line)`` for each line a command prints; stream is ``"stdout"`` or ``"stderr"``."""

ProgressHandler = Callable[[int, int | None], None]
"""Receives ``(bytes_done, bytes_total)`` as a transfer advances."""

SpecT_contra = TypeVar("SpecT_contra", bound=BaseModel, default=Any, contravariant=True)
"""The model of the template entries an implementation takes (any model when not given)."""


@runtime_checkable
class Communicator(Protocol):
    """A connection to a running guest (SSH, WinRM, …)."""

    name: ClassVar[str]
    os_type: OsType

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        on_output: OutputHandler | None = None,
    ) -> CommandResult:
        """Run ``command`` in a new session; stream its lines to ``on_output``; return its exit code.

        Raises :class:`~aib_sdk.errors.CommandTimeout` past ``timeout`` (the command is then terminated) and
        :class:`~aib_sdk.errors.CommunicatorError` when the connection fails. A connection lost because the guest
        rebooted is not an error: the result has ``exit_code`` -1 and the next call reconnects.
        """
        ...

    async def upload(self, local: Path, remote: str, *, on_progress: ProgressHandler | None = None) -> None:
        """Copy a local file to ``remote`` on the guest, streaming it."""
        ...

    async def download(self, remote: str, local: Path) -> None:
        """Copy a guest file to ``local``."""
        ...

    async def boot_id(self) -> str:
        """An id that changes on every boot of the guest (Linux: /proc/sys/kernel/random/boot_id)."""
        ...

    async def wait_rebooted(self, previous_boot_id: str, timeout: float) -> None:
        """Reconnect after a reboot and check that the boot id changed; raise on timeout."""
        ...

    async def aclose(self) -> None:
        """Close the connection."""
        ...


@dataclass(frozen=True)
class VmRequest:
    """What the template asks of the build VM (``vmProfile`` and ``additionalDataDisks``)."""

    vm_size: str = ""
    os_disk_size_gb: int = 0
    data_disk_sizes_gb: tuple[int, ...] = ()
    os_type: OsType = "Linux"
    extra: dict[str, Any] = field(default_factory=dict)


class Machine(Protocol):
    """A running build VM. Yielded by :meth:`BuildHost.start`; leaving that context destroys the VM."""

    communicator: Communicator

    async def shutdown(self) -> None:
        """Power the guest off cleanly and wait until it has stopped."""
        ...

    async def capture(self, ctx: RunContext) -> Artifact:
        """After :meth:`shutdown`, turn the VM's disk into a standalone :class:`Artifact`."""
        ...

    async def keep(self) -> str:
        """Leave the VM running past the context (``errorHandling: abort``); return how to reach it."""
        ...


@runtime_checkable
class LayeredMachine(Protocol):
    """Optional members of a :class:`Machine` whose disk can be kept as a layer after each step (the step cache).

    A build host whose machines lack them simply does not cache. To boot from a layer, the Builder passes
    :meth:`BuildHost.start` a :class:`DiskImage` whose ``path`` is a stored layer (format ``layer_format``) that
    has a backing chain; the host must open it as it opens any base disk (never writing it). Optionally, the
    build host class has ``cache_facts(config) -> dict``: its settings that change what the disk holds (network
    mode, build user …), which become part of every layer key.
    """

    layer_format: str
    """The format of the layers this machine writes (``qcow2`` for QEMU)."""

    async def snapshot(self, dest: Path, backing: Path, backing_format: str) -> bool:
        """Write the disk's changes since boot or the previous snapshot to ``dest`` (an existing empty file, to
        be written in place), as a layer whose backing file is ``backing``; the VM keeps running. The guest's
        buffers are flushed first (the layer is consistent like a power cut after ``sync``). Return ``False``
        when this machine cannot (e.g. it has data disks whose state a layer would not hold).

        Optionally (RAM state, ``[cache] ram_state``): a machine with ``saves_state = True`` also accepts
        ``state=StateRequest(...)`` and then saves its RAM and device state at the very moment the layer is
        frozen, so that a later build can resume it instead of booting the layer (its host reads
        ``DiskImage.saved_state`` and sets ``resumed_state`` on the machine it yields)."""
        ...


class BuildHost(Protocol):
    """Boots build VMs: QEMU locally, a cloud VM elsewhere."""

    name: ClassVar[str]

    @classmethod
    def available(cls, config: Config) -> bool:
        """Whether this host can run here (binaries present, credentials configured)."""
        ...

    def start(self, image: DiskImage, vm: VmRequest, ctx: RunContext) -> AbstractAsyncContextManager[Machine]:
        """Boot ``image`` (never modifying it) and yield a ready :class:`Machine`."""
        ...


class Source(Protocol[SpecT_contra]):
    """Resolves a template's ``source`` into a local bootable :class:`DiskImage`."""

    type_name: ClassVar[str]
    spec_model: ClassVar[type[BaseModel]]

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        """Whether this implementation handles ``spec`` (e.g. PlatformImage with publisher Debian)."""
        ...

    # Optional: ``explain_unclaimed(cls, spec, config) -> str | None``, a classmethod giving the user a way out when
    # no implementation claims ``spec`` (e.g. "use --source, or map it in [qemu.catalogue]").

    async def resolve(self, spec: SpecT_contra, ctx: RunContext) -> DiskImage:
        """Download, build or look up the base image; record ``exact_version``."""
        ...


class Customizer(Protocol[SpecT_contra]):
    """One step type of ``customize[]`` (and of ``validate.inVMValidations[]`` when ``validator_model`` is set)."""

    type_name: ClassVar[str]
    spec_model: ClassVar[type[BaseModel]]
    validator_model: ClassVar[type[BaseModel] | None]
    # Optional class attributes, read with getattr: ``os_types`` (tuple of OsType the step runs on; absent means
    # any) and ``hidden`` (True for the Builder's implicit last step, e.g. deprovisioning, which is not a template
    # type and is picked by ``os_types``).

    async def run(self, spec: SpecT_contra, step: StepContext) -> None:
        """Run the step on ``step.communicator``; raise :class:`~aib_sdk.errors.StepError` on failure."""
        ...


class Distributor(Protocol[SpecT_contra]):
    """Publishes an :class:`Artifact` to one ``distribute[]`` target."""

    type_name: ClassVar[str]
    spec_model: ClassVar[type[BaseModel]]

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        """Whether this implementation handles the target (decided by its id or URI)."""
        ...

    # Optional: ``async def preflight(self, spec, image: DiskImage, ctx) -> None`` — raise if the target cannot take
    # the image (e.g. a missing gallery definition). The Builder calls it before booting any VM, as AIB checks
    # dependencies at submission.

    async def publish(self, artifact: Artifact, spec: SpecT_contra, ctx: RunContext) -> RunOutput:
        """Publish atomically: on failure or cancellation leave nothing half-written behind."""
        ...


class BlobStore(Protocol):
    """Moves whole files to and from one artifact store (a directory, a bucket, a container) by key.

    Keys are ``sha256/<digest>``; :class:`aib_sdk.artifact_store.ArtifactStore` hashes and verifies, so a backend
    only moves bytes. Plugins register an opener ``(location, config) -> BlobStore`` per URI scheme (hook
    ``aib_register_artifact_stores``).
    """

    location: str
    """Where the store is, for messages (no credentials)."""

    async def has(self, key: str, sha256: str, size: int) -> bool:
        """Whether ``key`` already holds this content (at least: an object of ``size`` bytes recorded as ``sha256``)."""
        ...

    async def upload(self, key: str, path: Path, sha256: str, size: int) -> None:
        """Store ``path`` as ``key``, atomically: readers never see part of it."""
        ...

    async def download(self, key: str, dest: Path) -> bool:
        """Write ``key``'s bytes to ``dest``; False when the store has no such key."""
        ...


BlobStoreOpener = Callable[[str, "Config"], BlobStore]
"""Opens the store a location names (``s3://bucket/prefix`` …) with this machine's configuration."""
