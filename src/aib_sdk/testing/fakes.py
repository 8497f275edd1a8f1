"""Test fakes for every protocol, and a real :class:`~aib_sdk.context.RunContext` for direct provider tests.

These are *test servers* in the project's sense: stand-ins used where the real component is not what a test is
about (the Builder's run semantics need no VM). They respect :mod:`aib_sdk.protocols`.

- :func:`make_run_context` — a real RunContext (real fetcher, staging dirs and config under ``tmp_path``).
- :func:`fake_plugin` — a plugin registering, under test type names:
  source ``FakeImage`` (:class:`FakeSource`), build host ``fake`` (:class:`FakeBuildHost`, whose machines carry a
  :class:`FakeCommunicator`), customizer/validator ``FakeStep`` (:class:`FakeStep`) and distributor ``FakeTarget``
  (:class:`RecordingDistributor`). Each plugin has its own :class:`FakeWorld` recording everything and holding
  the behaviour tests ask for (failing or hanging commands, failing or slow targets)::

      fakes = fake_plugin()
      fakes.world.fail_command("apt-get", exit_code=100, output="E: no such package")
      fakes.world.fail_target("second", "quota exceeded")
      plugins = PluginManager(entry_points=False, plugins=[fakes])
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio
from pydantic import BaseModel, Field

from aib_sdk.artifacts import Artifact, CommandResult, DiskImage, OsType, RunOutput
from aib_sdk.bases import CustomizerBase, DistributorBase, SourceBase
from aib_sdk.config import Config
from aib_sdk.context import RunContext, Staging, StepContext
from aib_sdk.errors import BuildHostError, CommandTimeout, DistributeError, SourceError, StepError
from aib_sdk.events import EventSink, TargetStatus, null_sink
from aib_sdk.fetch import UriFetcher
from aib_sdk.models.specs import AibModel, DistributorSpec, StepSpec
from aib_sdk.options import BuildOptions
from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.protocols import (
    BuildHost,
    Communicator,
    Customizer,
    Distributor,
    Machine,
    OutputHandler,
    ProgressHandler,
    Source,
    VmRequest,
)
from aib_sdk.runtime import cleanup_scope
from aib_sdk.staging import new_run_id

FAKE_DIGEST = "0" * 64


def make_run_context(
    tmp_path: Path,
    *,
    config: Config | None = None,
    plugins: PluginManager | None = None,
    emit: EventSink | None = None,
    run_id: str | None = None,
    template_name: str = "test",
    options: BuildOptions | None = None,
) -> RunContext:
    """A real :class:`RunContext` for tests that call a provider directly.

    ``AIB_HOME``/``AIB_CACHE`` are ``tmp_path/home`` and ``tmp_path/cache`` (unless ``config`` is given); the
    staging directories (inputs, run directory, work) exist; the fetcher is the real :class:`UriFetcher`.
    """
    if config is None:
        env = dict(os.environ)
        env["AIB_HOME"] = str(tmp_path / "home")
        env["AIB_CACHE"] = str(tmp_path / "cache")
        config = Config({}, env)
    options = options or BuildOptions(config=config)
    sink = emit if emit is not None else null_sink
    run_id = run_id or new_run_id()
    staging = Staging(config.home / "staging" / f"{template_name}-{FAKE_DIGEST[:8]}", run_id)
    for path in (staging.inputs, staging.run_directory, staging.work, config.cache):
        path.mkdir(parents=True, exist_ok=True)
    fetcher = UriFetcher(
        staging.inputs,
        emit=sink,
        uri_map=options.uri_map,
        base_directory=options.base_directory,
        transport=options.http_transport,
    )
    return RunContext(
        run_id=run_id,
        template_name=template_name,
        template_digest=FAKE_DIGEST,
        staging=staging,
        config=config,
        options=options,
        emit=sink,
        fetcher=fetcher,
        plugins=plugins or PluginManager(entry_points=False),
    )


# The world: what the fakes recorded, and how tests ask them to behave ----------------------------------------


CommandCallback = Callable[[str], "CommandResult | None"]


@dataclass
class CommandRule:
    """What commands matching ``pattern`` (a regular expression, searched) do: print and exit, hang, or call back.

    ``output`` goes to stdout when ``exit_code`` is 0, else to stderr (``fail_command``); ``stdout``/``stderr``
    are printed as given (``on_command``). ``callback(command)`` may return the whole :class:`CommandResult`.
    A ``required`` rule that never matched fails the test at teardown (:meth:`FakeWorld.check_rules`).
    """

    pattern: str
    exit_code: int = 1
    output: str = ""
    hang: bool = False
    stdout: str | None = None
    stderr: str = ""
    callback: CommandCallback | None = None
    required: bool = False
    matched: int = 0

    def matches(self, command: str) -> bool:
        return re.search(self.pattern, command) is not None


@dataclass
class Publish:
    """One call of :meth:`RecordingDistributor.publish`."""

    run_output_name: str
    artifact: Artifact
    spec: BaseModel
    started: float
    finished: float | None = None
    ok: bool = False


@dataclass
class FakeWorld:
    """Shared state of one :func:`fake_plugin`: behaviour knobs and everything recorded."""

    command_rules: list[CommandRule] = field(default_factory=list)
    failing_targets: dict[str, str] = field(default_factory=dict)
    slow_targets: dict[str, float] = field(default_factory=dict)
    boot_error: str | None = None
    keep_layers: bool = False
    """Machines support the step cache's ``snapshot`` (a JSON 'layer' naming its backing file and commands)."""
    snapshot_error: str | None = None
    """With ``keep_layers``: every snapshot raises this (a build host failing mid-layer)."""
    snapshots: list[Path] = field(default_factory=list)
    machines: list[FakeMachine] = field(default_factory=list)
    publishes: list[Publish] = field(default_factory=list)
    resolved: list[DiskImage] = field(default_factory=list)
    active_publishes: int = 0
    max_active_publishes: int = 0
    capture_bytes: int = 0
    """When set (a multiple of 1 MiB), capture writes a real raw disk of that size (random data) that real
    distributors can convert and upload; else a few bytes naming the commands run."""

    def fail_command(self, pattern: str, *, exit_code: int = 1, output: str = "") -> None:
        """Commands matching ``pattern`` (regex) print ``output`` and exit with ``exit_code``."""
        self.command_rules.append(CommandRule(pattern, exit_code, output))

    def on_command(
        self,
        pattern: str,
        *,
        stdout: str = "",
        stderr: str = "",
        exit_code: int = 0,
        callback: CommandCallback | None = None,
        required: bool = True,
    ) -> CommandRule:
        """Commands matching ``pattern`` (regex, searched; the first rule that matches wins) print ``stdout`` and
        ``stderr`` and exit with ``exit_code``, or answer with ``callback(command)``. Unless ``required=False``,
        a rule that never matched fails the test at teardown (the ``aib_fakes`` fixture checks)."""
        rule = CommandRule(
            pattern, exit_code, hang=False, stdout=stdout, stderr=stderr, callback=callback, required=required
        )
        self.command_rules.append(rule)
        return rule

    def check_rules(self) -> None:
        """Raise ``AssertionError`` naming every required command rule that no command matched."""
        unused = [r.pattern for r in self.command_rules if r.required and not r.matched]
        if unused:
            raise AssertionError(f"command rules never matched by any command: {unused}")

    def hang_command(self, pattern: str) -> None:
        """Commands matching ``pattern`` (regex) never finish (until their timeout or cancellation)."""
        self.command_rules.append(CommandRule(pattern, hang=True))

    def fail_target(self, pattern: str, message: str = "fake target failure") -> None:
        """Targets whose ``runOutputName`` matches ``pattern`` (glob) fail to publish."""
        self.failing_targets[pattern] = message

    def slow_target(self, pattern: str, seconds: float) -> None:
        """Targets whose ``runOutputName`` matches ``pattern`` (glob) take ``seconds`` to publish."""
        self.slow_targets[pattern] = seconds

    @property
    def commands(self) -> list[str]:
        """Every command run on every machine, in order."""
        return [c for m in self.machines for c in m.fake_communicator.commands]

    @property
    def machine(self) -> FakeMachine:
        """The last machine started."""
        if not self.machines:
            raise AssertionError("no fake machine was started")
        return self.machines[-1]

    def _lookup(self, table: dict[str, Any], name: str) -> Any:
        for pattern, value in table.items():
            if fnmatch.fnmatchcase(name, pattern):
                return value
        return None


# Communicator, machine, build host ------------------------------------------------------------------------


class FakeCommunicator:
    """Records every command and upload. ``echo TEXT`` prints TEXT, ``id -un`` prints ``builder``; other commands
    print ``ran: CMD``."""

    name: ClassVar[str] = "fake"

    def __init__(self, world: FakeWorld, os_type: OsType = "Linux") -> None:
        self.world = world
        self.os_type: OsType = os_type
        self.commands: list[str] = []
        self.uploads: list[tuple[Path, str, bytes]] = []
        self.boot = 1
        self.closed = False

    async def run(
        self, command: str, *, timeout: float | None = None, on_output: OutputHandler | None = None
    ) -> CommandResult:
        self.commands.append(command)
        await anyio.lowlevel.checkpoint()
        rule = next((r for r in self.world.command_rules if r.matches(command)), None)
        if rule is not None:
            rule.matched += 1
            answer = rule.callback(command) if rule.callback is not None else None
            if answer is not None:
                for stream, text in (("stdout", answer.stdout), ("stderr", answer.stderr)):
                    for line in text.splitlines():
                        if on_output is not None:
                            on_output(stream, line)
                return answer
            if rule.stdout is not None:
                for stream, text in (("stdout", rule.stdout), ("stderr", rule.stderr)):
                    for line in text.splitlines():
                        if on_output is not None:
                            on_output(stream, line)
                return CommandResult(rule.exit_code, rule.stdout, rule.stderr)
        if rule is not None and rule.hang:
            with anyio.move_on_after(timeout) as scope:
                await anyio.sleep_forever()
            if scope.cancelled_caught:
                raise CommandTimeout(f"command timed out after {timeout}s: {command}")
        if rule is not None:
            lines, code = rule.output.splitlines(), rule.exit_code
        elif command.startswith("echo "):
            lines, code = command[5:].split("\\n"), 0
        elif command == "id -un":
            lines, code = ["builder"], 0
        else:
            lines, code = [f"ran: {command}"], 0
        stream = "stdout" if code == 0 else "stderr"
        for line in lines:
            if on_output is not None:
                on_output(stream, line)
        text = "\n".join(lines)
        return CommandResult(code, text if code == 0 else "", "" if code == 0 else text)

    async def upload(self, local: Path, remote: str, *, on_progress: ProgressHandler | None = None) -> None:
        data = await anyio.Path(local).read_bytes()
        self.uploads.append((local, remote, data))
        if on_progress is not None:
            on_progress(len(data), len(data))

    async def download(self, remote: str, local: Path) -> None:
        for _, dest, data in reversed(self.uploads):
            if dest == remote:
                await anyio.Path(local).write_bytes(data)
                return
        raise FileNotFoundError(remote)

    async def boot_id(self) -> str:
        return f"boot-{self.boot}"

    async def wait_rebooted(self, previous_boot_id: str, timeout: float) -> None:
        self.boot += 1

    async def aclose(self) -> None:
        self.closed = True


def read_fake_layers(path: Path) -> list[str]:
    """The commands recorded in a fake layer chain (oldest first); ``[]`` for a disk that is not a fake layer."""
    commands: list[str] = []
    current: Path | None = path
    while current is not None:
        try:
            data = json.loads(current.read_bytes())
        except (OSError, ValueError):
            break
        if not isinstance(data, dict) or data.get("fakeLayer") != 1:
            break
        commands[:0] = list(data.get("commands", []))
        current = Path(data["backing"]) if data.get("backing") else None
    return commands


class FakeMachine:
    """A build VM that exists only in memory; capture writes a small raw file into the run's ``work/``.

    With ``world.keep_layers`` it implements :class:`~aib_sdk.protocols.LayeredMachine`: a snapshot is a JSON file
    naming its backing file and the commands run since the previous one, and a machine booted from such a layer
    starts with the chain's commands as its disk's history (``history``), which capture writes out too.
    """

    def __init__(self, world: FakeWorld, image: DiskImage, vm: VmRequest) -> None:
        self.world = world
        self.image = image
        self.vm = vm
        self.communicator: Communicator = FakeCommunicator(world, image.os_type)
        self.shut_down = False
        self.captured: Artifact | None = None
        self.kept = False
        self.destroyed = False
        self.history: list[str] = read_fake_layers(image.path) if world.keep_layers else []
        self._snapshot_mark = 0
        self.disk: list[str] = []
        """After capture: the commands the captured disk holds (its layer history, then this machine's)."""
        if world.keep_layers:
            self.layer_format = "raw"

    async def snapshot(self, dest: Path, backing: Path, backing_format: str) -> bool:
        if not self.world.keep_layers:
            return False
        await anyio.lowlevel.checkpoint()
        if self.world.snapshot_error:
            await anyio.Path(dest).write_bytes(b"half a layer")
            raise BuildHostError(self.world.snapshot_error)
        commands = self.fake_communicator.commands[self._snapshot_mark :]
        self._snapshot_mark = len(self.fake_communicator.commands)
        layer = {"fakeLayer": 1, "backing": str(backing), "backingFormat": backing_format, "commands": commands}
        await anyio.Path(dest).write_text(json.dumps(layer))
        self.world.snapshots.append(dest)
        return True

    @property
    def fake_communicator(self) -> FakeCommunicator:
        assert isinstance(self.communicator, FakeCommunicator)
        return self.communicator

    async def shutdown(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.shut_down = True

    async def capture(self, ctx: RunContext) -> Artifact:
        if not self.shut_down:
            raise BuildHostError("capture before shutdown")
        path = ctx.staging.work / "fake-capture.raw"
        await anyio.Path(path).parent.mkdir(parents=True, exist_ok=True)
        commands = self.disk = [*self.history, *self.fake_communicator.commands]
        size = self.world.capture_bytes
        if size:
            await anyio.Path(path).write_bytes(os.urandom(size))
        else:
            await anyio.Path(path).write_bytes(b"fake disk\n" + "\n".join(commands).encode())
        self.captured = Artifact(
            path=path,
            format="raw",
            virtual_size=size or 1 << 20,
            os_type=self.image.os_type,
            source_version=self.image.exact_version,
            template_digest=ctx.template_digest,
            run_id=ctx.run_id,
            template_name=ctx.template_name,
        )
        return self.captured

    async def keep(self) -> str:
        self.kept = True
        return "ssh -p 2222 builder@127.0.0.1 (fake machine)"


class FakeBuildHost:
    """Build host ``fake``: 'boots' a :class:`FakeMachine`; destroys it on exit unless it was kept."""

    name: ClassVar[str] = "fake"
    world: ClassVar[FakeWorld]

    @classmethod
    def available(cls, config: Config) -> bool:
        return True

    def start(self, image: DiskImage, vm: VmRequest, ctx: RunContext) -> AbstractAsyncContextManager[Machine]:
        return self._run(image, vm, ctx)

    @asynccontextmanager
    async def _run(self, image: DiskImage, vm: VmRequest, ctx: RunContext) -> AsyncIterator[Machine]:
        await anyio.lowlevel.checkpoint()
        if self.world.boot_error:
            raise BuildHostError(self.world.boot_error)
        machine = FakeMachine(self.world, image, vm)
        self.world.machines.append(machine)
        # Like a real host, hold a task group (a serial-console reader) open for the machine's lifetime, so
        # callers that do not nest cancel scopes correctly fail here as they would with QEMU.
        async with anyio.create_task_group() as console:
            console.start_soon(anyio.sleep_forever)
            try:
                yield machine
            finally:
                with cleanup_scope(10):
                    await machine.communicator.aclose()
                    await anyio.lowlevel.checkpoint()
                if not machine.kept:
                    machine.destroyed = True
                console.cancel_scope.cancel()


# Source --------------------------------------------------------------------------------------------------------


class FakeImageSpec(AibModel):
    """Source type ``FakeImage``: ``version`` ``latest`` resolves to ``exactVersion`` ``1.2.3``."""

    type: Literal["FakeImage"]
    version: str = "latest"
    os_type: Literal["Linux", "Windows"] = "Linux"
    fail: str | None = None
    delay: float = Field(default=0.0, ge=0)


class FakeSource(SourceBase[FakeImageSpec]):
    """Resolves ``FakeImage`` into a tiny file in the cache (no real disk)."""

    world: ClassVar[FakeWorld]

    async def resolve(self, spec: FakeImageSpec, ctx: RunContext) -> DiskImage:
        if spec.delay:
            await anyio.sleep(spec.delay)
        if spec.fail:
            raise SourceError(spec.fail)
        version = "1.2.3" if spec.version == "latest" else spec.version
        path = anyio.Path(ctx.cache_dir) / "fake-images" / f"fake-{version}.raw"
        await path.parent.mkdir(parents=True, exist_ok=True)
        if not await path.exists():  # written once, atomically: concurrent builds may be reading it
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(self)}")
            await tmp.write_bytes(b"fake base image\n")
            await tmp.replace(path)
        image = DiskImage(path=Path(path), format="raw", os_type=spec.os_type, exact_version=version)
        self.world.resolved.append(image)
        return image


# Step ----------------------------------------------------------------------------------------------------------


class FakeStepSpec(StepSpec):
    """Customizer/validator type ``FakeStep``: runs each of ``commands`` through the communicator."""

    type: Literal["FakeStep"]
    commands: list[str] = Field(default_factory=list)
    sleep: float = Field(default=0.0, ge=0)
    timeout: float | None = None


class FakeStep(CustomizerBase[FakeStepSpec]):
    """Runs ``commands`` in order; a non-zero exit fails the step with the exit code and last log lines."""

    validator_model: ClassVar[type[BaseModel] | None] = FakeStepSpec

    async def run(self, spec: FakeStepSpec, step: StepContext) -> None:
        if spec.sleep:
            await anyio.sleep(spec.sleep)
        for command in spec.commands:
            result = await step.communicator.run(command, timeout=spec.timeout, on_output=step.on_output)
            if not result.ok:
                raise StepError(
                    step.name, f"command {command!r} failed", exit_code=result.exit_code, log_tail=step.tail
                )


# Distributor ---------------------------------------------------------------------------------------------------


class FakeTargetSpec(DistributorSpec):
    """Distributor type ``FakeTarget``: ``regions`` replicate concurrently; ``fail``/``delay`` set behaviour."""

    type: Literal["FakeTarget"]
    regions: list[str] = Field(default_factory=list)
    fail: str | None = None
    delay: float = Field(default=0.0, ge=0)


class RecordingDistributor(DistributorBase[FakeTargetSpec]):
    """Records each publish; fails or is slow when the spec or the world says so."""

    world: ClassVar[FakeWorld]

    async def publish(self, artifact: Artifact, spec: FakeTargetSpec, ctx: RunContext) -> RunOutput:
        world = self.world
        name = spec.run_output_name
        record = Publish(name, artifact, spec, started=anyio.current_time())
        world.publishes.append(record)
        world.active_publishes += 1
        world.max_active_publishes = max(world.max_active_publishes, world.active_publishes)
        try:
            delay = world._lookup(world.slow_targets, name) or spec.delay
            failure = world._lookup(world.failing_targets, name) or spec.fail
            regions = spec.regions or ["local"]
            uris: dict[str, str] = {}

            async def replicate(region: str) -> None:
                ctx.emit(TargetStatus(run_output_name=name, type=self.type_name, region=region, state="Running"))
                if delay:
                    await anyio.sleep(delay)
                ctx.progress(
                    "replicate", name, artifact.virtual_size, artifact.virtual_size, target=name, region=region
                )
                uris[region] = f"fake://{region}/{name}"
                ctx.emit(TargetStatus(run_output_name=name, type=self.type_name, region=region, state="Succeeded"))

            async with anyio.create_task_group() as tg:
                for region in regions:
                    tg.start_soon(replicate, region)
            if failure:
                raise DistributeError(f"{name}: {failure}")
            record.ok = True
            return RunOutput(
                run_output_name=name,
                artifact_id=f"fake://{name}",
                artifact_uri=uris[regions[0]],
                regions=uris,
            )
        finally:
            world.active_publishes -= 1
            record.finished = anyio.current_time()


# The plugin ----------------------------------------------------------------------------------------------------


class FakePlugin:
    """A pluggy plugin object registering the fakes bound to one :class:`FakeWorld`."""

    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        ns: dict[str, Any] = {"world": world}
        self.source: type[Source] = type("FakeSource", (FakeSource,), ns)
        self.build_host: type[BuildHost] = type("FakeBuildHost", (FakeBuildHost,), ns)
        self.distributor: type[Distributor] = type("RecordingDistributor", (RecordingDistributor,), ns)
        self.step: type[Customizer] = FakeStep

    @hookimpl
    def aib_register_sources(self) -> list[type[Source]]:
        return [self.source]

    @hookimpl
    def aib_register_build_hosts(self) -> list[type[BuildHost]]:
        return [self.build_host]

    @hookimpl
    def aib_register_customizers(self) -> list[type[Customizer]]:
        return [self.step]

    @hookimpl
    def aib_register_distributors(self) -> list[type[Distributor]]:
        return [self.distributor]


def fake_plugin(world: FakeWorld | None = None) -> FakePlugin:
    """A plugin registering ``FakeImage``, build host ``fake``, ``FakeStep`` and ``FakeTarget``."""
    return FakePlugin(world or FakeWorld())


def fake_template(
    *,
    steps: int = 1,
    targets: int = 1,
    validations: int = 0,
    name: str | None = None,
    **properties: Any,
) -> dict[str, Any]:
    """A template (bare properties) using only fake types: ``steps`` FakeSteps, ``targets`` FakeTargets."""
    props: dict[str, Any] = {
        "source": {"type": "FakeImage", "version": "latest"},
        "customize": [{"type": "FakeStep", "name": f"step-{i}", "commands": [f"echo step {i}"]} for i in range(steps)],
        "distribute": [{"type": "FakeTarget", "runOutputName": f"target-{i}"} for i in range(targets)],
    }
    if validations:
        props["validate"] = {
            "inVMValidations": [
                {"type": "FakeStep", "name": f"check-{i}", "commands": [f"echo check {i}"]} for i in range(validations)
            ]
        }
    props.update(properties)
    if name is not None:
        return {"type": "Microsoft.VirtualMachineImages/imageTemplates", "name": name, "properties": props}
    return props
