"""Typed base classes for providers: the convenient way to implement the contracts in :mod:`aib_sdk.protocols`.

A base is generic over the template entry's model, so the provider's methods receive the model itself, with no
``isinstance`` narrowing; ``spec_model`` and ``type_name`` are taken from the type argument, and every optional
member has its default here::

    class Hello(CustomizerBase[HelloSpec]):          # spec_model = HelloSpec, type_name = "Hello"
        async def run(self, spec: HelloSpec, step: StepContext) -> None:
            await step.communicator.run(f"echo {spec.greeting}", on_output=step.on_output)

The protocols stay the contract: the Builder never requires these bases, and a class that implements the protocol
directly keeps working.
"""

from __future__ import annotations

import contextlib
import typing
from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Generic

from pydantic import BaseModel
from typing_extensions import TypeVar

from aib_sdk.artifacts import Artifact, DiskImage, OsType, RunOutput
from aib_sdk.errors import PluginError

if TYPE_CHECKING:
    from aib_sdk.config import Config
    from aib_sdk.context import RunContext, StepContext
    from aib_sdk.protocols import Machine, VmRequest

SpecT = TypeVar("SpecT", bound=BaseModel, default=Any)

ANY_OS: tuple[OsType, ...] = ("Linux", "Windows")

__all__ = ["ANY_OS", "BuildHostBase", "CustomizerBase", "DistributorBase", "SourceBase", "SpecT"]


def _spec_argument(cls: type) -> type[BaseModel] | None:
    """The model ``M`` of a base written ``SomethingBase[M]`` among ``cls``'s bases (``None`` when generic)."""
    for base in getattr(cls, "__orig_bases__", ()):
        for arg in typing.get_args(base):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


class _SpecBound:
    """Fills ``spec_model`` and ``type_name`` of a subclass from its type argument (unless it sets them)."""

    type_name: ClassVar[str]
    spec_model: ClassVar[type[BaseModel]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = _spec_argument(cls)
        if model is not None and "spec_model" not in cls.__dict__:
            cls.spec_model = model
        if "type_name" not in cls.__dict__ and "spec_model" in vars(cls):
            from aib_sdk.plugins.registry import type_name_of

            # a model without a Literal ``type``: the registry names the problem when the class is registered
            with contextlib.suppress(PluginError):
                cls.type_name = type_name_of(cls.spec_model)


class SourceBase(_SpecBound, ABC, Generic[SpecT]):
    """A :class:`~aib_sdk.protocols.Source` for the entries of one model.

    Implement :meth:`resolve`; override :meth:`accepts` when several providers answer the same type (e.g. a
    ``PlatformImage`` publisher) and :meth:`explain_unclaimed` to tell the user a way out.
    """

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        """The protocol's question: an entry of this class's ``spec_model`` that :meth:`accepts` takes."""
        return isinstance(spec, cls.spec_model) and cls.accepts(typing.cast("SpecT", spec), config)

    @classmethod
    def accepts(cls, spec: SpecT, config: Config) -> bool:
        """Whether this implementation handles ``spec`` (already of ``spec_model``); default: yes."""
        return True

    @classmethod
    def explain_unclaimed(cls, spec: BaseModel, config: Config) -> str | None:
        """When no source claims ``spec``: a hint for the user (default: none)."""
        return None

    @abstractmethod
    async def resolve(self, spec: SpecT, ctx: RunContext) -> DiskImage:
        """Download, build or look up the base image; record ``exact_version``."""


class CustomizerBase(_SpecBound, ABC, Generic[SpecT]):
    """A :class:`~aib_sdk.protocols.Customizer` (one step type).

    ``validator_model``: the model of the same step in ``validate.inVMValidations[]`` (default: not a validator).
    ``os_types``: the guests it runs on (default: any). ``hidden``: the Builder's implicit last step, not a template
    type (default: no).
    """

    validator_model: ClassVar[type[BaseModel] | None] = None
    os_types: ClassVar[tuple[OsType, ...]] = ANY_OS
    hidden: ClassVar[bool] = False

    @abstractmethod
    async def run(self, spec: SpecT, step: StepContext) -> None:
        """Run the step on ``step.communicator``; raise :class:`~aib_sdk.errors.StepError` on failure."""


class DistributorBase(_SpecBound, ABC, Generic[SpecT]):
    """A :class:`~aib_sdk.protocols.Distributor` (one target type).

    Implement :meth:`publish` (atomically: see :func:`aib_sdk.distributors.files.publish_file` for files);
    override :meth:`accepts` to pick targets by id or URI and :meth:`preflight` to refuse a target before any VM
    boots.
    """

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        """The protocol's question: an entry of this class's ``spec_model`` that :meth:`accepts` takes."""
        return isinstance(spec, cls.spec_model) and cls.accepts(typing.cast("SpecT", spec), config)

    @classmethod
    def accepts(cls, spec: SpecT, config: Config) -> bool:
        """Whether this implementation publishes ``spec`` (already of ``spec_model``); default: yes."""
        return True

    async def preflight(self, spec: SpecT, image: DiskImage, ctx: RunContext) -> None:
        """Raise if the target cannot take the image (checked before any VM boots); default: no check."""

    @abstractmethod
    async def publish(self, artifact: Artifact, spec: SpecT, ctx: RunContext) -> RunOutput:
        """Publish atomically: on failure or cancellation leave nothing half-written behind."""


class BuildHostBase(ABC):
    """A :class:`~aib_sdk.protocols.BuildHost`; ``name`` is how ``BuildOptions(build_host=…)`` selects it."""

    name: ClassVar[str]

    @classmethod
    def available(cls, config: Config) -> bool:
        """Whether this host can run here (default: yes)."""
        return True

    @abstractmethod
    def start(self, image: DiskImage, vm: VmRequest, ctx: RunContext) -> AbstractAsyncContextManager[Machine]:
        """Boot ``image`` (never modifying it) and yield a ready :class:`~aib_sdk.protocols.Machine`."""
