"""A conformance suite a provider runs in its own tests: subclass, say what to build, and pytest runs the checks.

```python
from aib_sdk.testing.conformance import DistributorConformance

class TestTarball(DistributorConformance):
    distributor = TarballDistributor

    def target(self, where: Path) -> dict[str, Any]:          # one template entry, publishing under ``where``
        return {"type": "Tarball", "path": str(where / "out.tar"), "runOutputName": "tar"}

    def published(self, where: Path) -> list[str]:            # what a reader of the target can see
        return sorted(p.name for p in where.glob("*.tar"))
```

Every suite checks the spec model (a template type with a JSON schema, validating inside a whole template) and
``claims``; distributors are checked for a successful publish, a preflight that accepts the target, and atomicity:
a publish cancelled at any point leaves nothing visible. Customizers run against the fake communicator (a step
whose command fails must fail, and a step must be cancellable); sources must resolve to a disk ``qemu-img`` reads.

The suites need the ``anyio`` pytest plugin (installed with anyio) and use the ``tmp_path`` fixture.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from pydantic import BaseModel

from aib_sdk import disks
from aib_sdk.artifacts import Artifact, DiskImage, RunOutput
from aib_sdk.config import Config
from aib_sdk.context import RunContext, StepContext
from aib_sdk.errors import StepError, TemplateError
from aib_sdk.models.loader import load_template
from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.plugins.registry import check_class, type_name_of
from aib_sdk.protocols import Customizer, Distributor, Source
from aib_sdk.testing.fakes import FakeCommunicator, FakeImageSpec, FakeWorld, make_run_context

__all__ = ["CustomizerConformance", "DistributorConformance", "SourceConformance"]

DISK_SIZE = 4 << 20
CANCEL_AFTER = (0.0, 0.001, 0.01, 0.05)
"""Seconds after which a publish is cancelled, to catch it at different points (one that finished is skipped)."""

_SOURCE = {"type": "PlatformImage", "publisher": "aib-sdk", "offer": "tiny-test-guest", "sku": "busybox"}
_TARGET = {"type": "VHD", "runOutputName": "conformance-disk"}


class _Registered:
    """The hooks registering one class (to validate whole templates with it)."""

    def __init__(self, kind: str, cls: Any) -> None:
        self.kind, self.cls = kind, cls

    @hookimpl
    def aib_register_sources(self) -> list[Any]:
        return [self.cls] if self.kind == "source" else []

    @hookimpl
    def aib_register_customizers(self) -> list[Any]:
        return [self.cls] if self.kind == "customizer" else []

    @hookimpl
    def aib_register_distributors(self) -> list[Any]:
        return [self.cls] if self.kind == "distributor" else []


class _Conformance:
    kind: ClassVar[str]

    def implementation(self) -> Any:
        raise NotImplementedError

    def entry(self, where: Path) -> dict[str, Any]:
        raise NotImplementedError

    def context(self, tmp_path: Path) -> RunContext:
        """The run context calls get; override to give the provider its settings (``make_run_context(config=…)``)."""
        return make_run_context(tmp_path / "ctx")

    def spec(self, where: Path) -> BaseModel:
        model: type[BaseModel] = self.implementation().spec_model
        return model.model_validate(self.entry(where))

    def _template(self, entry: dict[str, Any]) -> dict[str, Any]:
        props: dict[str, Any] = {"source": _SOURCE, "distribute": [_TARGET]}
        if self.kind == "source":
            props["source"] = entry
        elif self.kind == "customizer":
            props["customize"] = [entry]
        else:
            props["distribute"] = [entry]
        return {"properties": props}

    def test_registers_as_a_template_type(self) -> None:
        cls = self.implementation()
        check_class(self.kind, cls, "conformance")
        assert cls.type_name == type_name_of(cls.spec_model)
        schema = cls.spec_model.model_json_schema(by_alias=True)
        assert schema.get("type") == "object" and "type" in schema.get("properties", {})

    def test_entry_validates_inside_a_whole_template(self, tmp_path: Path) -> None:
        plugins = PluginManager(entry_points=False, plugins=[_Registered(self.kind, self.implementation())])
        loaded = load_template(self._template(self.entry(tmp_path)), plugins=plugins)
        assert loaded.properties is not None
        with pytest.raises(TemplateError, match="noSuchField"):
            load_template(self._template({**self.entry(tmp_path), "noSuchField": 1}), plugins=plugins)


class DistributorConformance(_Conformance):
    """Checks for a :class:`~aib_sdk.protocols.Distributor`. Set ``distributor``; implement :meth:`target` and
    :meth:`published`; override :meth:`context` to give the provider its settings (endpoints, credentials)."""

    kind: ClassVar[str] = "distributor"
    distributor: ClassVar[type[Distributor]]

    def implementation(self) -> Any:
        return self.distributor

    def target(self, where: Path) -> dict[str, Any]:
        """A ``distribute[]`` entry publishing somewhere private to ``where`` (a fresh folder per call)."""
        raise NotImplementedError

    def published(self, where: Path) -> list[str] | Awaitable[list[str]]:
        """What a reader of the target published for ``where`` can see (files, objects, versions); may be async."""
        raise NotImplementedError

    async def visible(self, where: Path) -> list[str]:
        found = self.published(where)
        return await found if inspect.isawaitable(found) else found

    def entry(self, where: Path) -> dict[str, Any]:
        return self.target(where)

    async def artifact(self, tmp_path: Path) -> Artifact:
        """A small standalone qcow2 disk with data in it, as a build's capture would be."""
        raw, path = tmp_path / "artifact.raw", tmp_path / "artifact.qcow2"
        await anyio.Path(tmp_path).mkdir(parents=True, exist_ok=True)
        await anyio.Path(raw).write_bytes(b"conformance" * 1000 + b"\0" * (DISK_SIZE - 11000))
        await disks.convert(raw, "raw", path, "qcow2")
        digest = await disks.sha256_file(path)
        return Artifact(path=path, format="qcow2", virtual_size=DISK_SIZE, sha256=digest, template_name="conformance")

    def test_claims_its_target_and_nothing_else(self, tmp_path: Path) -> None:
        config = self.context(tmp_path).config
        assert self.distributor.claims(self.spec(tmp_path / "t"), config) is True
        other = FakeImageSpec(type="FakeImage")
        assert not self.distributor.claims(other, config)

    @pytest.mark.anyio
    async def test_preflight_accepts_a_fresh_target(self, tmp_path: Path) -> None:
        preflight = getattr(self.distributor(), "preflight", None)
        if preflight is not None:
            image = DiskImage(path=tmp_path / "base.qcow2", format="qcow2")
            await preflight(self.spec(tmp_path / "t"), image, self.context(tmp_path))
        assert await self.visible(tmp_path / "t") == []  # a preflight publishes nothing

    @pytest.mark.anyio
    async def test_publish_returns_its_run_output(self, tmp_path: Path) -> None:
        spec = self.spec(tmp_path / "t")
        with anyio.fail_after(600):
            output = await self.distributor().publish(await self.artifact(tmp_path), spec, self.context(tmp_path))
        assert isinstance(output, RunOutput)
        assert output.run_output_name == spec.run_output_name  # type: ignore[attr-defined]
        assert output.provisioning_state == "Succeeded" and (output.artifact_id or output.artifact_uri)
        assert await self.visible(tmp_path / "t") != []

    @pytest.mark.anyio
    async def test_a_cancelled_publish_leaves_nothing_visible(self, tmp_path: Path) -> None:
        artifact = await self.artifact(tmp_path)
        ctx = self.context(tmp_path)
        for index, delay in enumerate(CANCEL_AFTER):
            where = tmp_path / f"cancel-{index}"
            with anyio.move_on_after(delay) as scope:
                await self.distributor().publish(artifact, self.spec(where), ctx)
            if scope.cancelled_caught:
                left = await self.visible(where)
                assert left == [], f"a publish cancelled after {delay}s left {left}"


class CustomizerConformance(_Conformance):
    """Checks for a :class:`~aib_sdk.protocols.Customizer`. Set ``customizer``; implement :meth:`step`; override
    :meth:`prepare` to set command rules on the fake guest (``world.on_command(...)``) the step needs."""

    kind: ClassVar[str] = "customizer"
    customizer: ClassVar[type[Customizer]]
    runs_commands: ClassVar[bool] = True
    """Whether the step runs commands on the guest (a step that only uploads sets ``False``: it is then checked to
    run none, instead of failing with a failing command and stopping at a hanging one)."""

    def implementation(self) -> Any:
        return self.customizer

    def step(self, where: Path) -> dict[str, Any]:
        """A ``customize[]`` entry (files it names may live under ``where``)."""
        raise NotImplementedError

    def prepare(self, world: FakeWorld) -> None:
        """Make the fake guest answer as the step expects (by default every command succeeds)."""

    def entry(self, where: Path) -> dict[str, Any]:
        return self.step(where)

    def step_context(self, tmp_path: Path, world: FakeWorld) -> StepContext:
        spec = self.entry(tmp_path)
        return StepContext(
            run=self.context(tmp_path),
            communicator=FakeCommunicator(world),
            phase="customize",
            index=0,
            name=str(spec.get("name") or "conformance"),
            type=self.customizer.type_name,
        )

    @pytest.mark.anyio
    async def test_runs_commands_on_the_guest(self, tmp_path: Path) -> None:
        world = FakeWorld()
        self.prepare(world)
        step = self.step_context(tmp_path, world)
        with anyio.fail_after(120):
            await self.customizer().run(self.spec(tmp_path), step)
        comm = step.communicator
        assert isinstance(comm, FakeCommunicator) and (comm.commands or comm.uploads)

    @pytest.mark.anyio
    async def test_a_failing_command_fails_the_step(self, tmp_path: Path) -> None:
        world = FakeWorld()
        world.on_command(".", stderr="boom\n", exit_code=7, required=False)
        step = self.step_context(tmp_path, world)
        if not self.runs_commands:
            await self.customizer().run(self.spec(tmp_path), step)
            assert step.communicator.commands == []  # type: ignore[attr-defined]
            return
        with pytest.raises(StepError):
            await self.customizer().run(self.spec(tmp_path), step)

    @pytest.mark.anyio
    async def test_a_step_is_cancellable(self, tmp_path: Path) -> None:
        world = FakeWorld()
        world.hang_command(".")
        with anyio.move_on_after(0.2 if self.runs_commands else 30) as scope:
            await self.customizer().run(self.spec(tmp_path), self.step_context(tmp_path, world))
        assert scope.cancelled_caught is self.runs_commands  # a step running no command cannot hang on one


class SourceConformance(_Conformance):
    """Checks for a :class:`~aib_sdk.protocols.Source`. Set ``source``; implement :meth:`source_spec`."""

    kind: ClassVar[str] = "source"
    source: ClassVar[type[Source]]

    def implementation(self) -> Any:
        return self.source

    def source_spec(self, where: Path) -> dict[str, Any]:
        """A ``source`` entry (files it names may live under ``where``)."""
        raise NotImplementedError

    def entry(self, where: Path) -> dict[str, Any]:
        return self.source_spec(where)

    def test_claims_its_spec(self, tmp_path: Path) -> None:
        assert self.source.claims(self.spec(tmp_path), self.context(tmp_path).config) is True
        assert not self.source.claims(FakeImageSpec(type="FakeImage"), Config({}))

    @pytest.mark.anyio
    async def test_resolves_to_a_readable_disk(self, tmp_path: Path) -> None:
        with anyio.fail_after(600):
            image = await self.source().resolve(self.spec(tmp_path), self.context(tmp_path))
        assert isinstance(image, DiskImage) and image.path.is_file()
        info = await disks.info(image.path, image.format)
        assert info.format == image.format and info.virtual_size > 0
