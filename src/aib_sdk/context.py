"""What a provider call receives: the run's identity, staging paths, config, events and the fetcher."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aib_sdk.config import Config
from aib_sdk.events import EventSink, LogLine, Progress, StepPhase, Warning
from aib_sdk.journal import Journal
from aib_sdk.options import BuildOptions

if TYPE_CHECKING:
    from aib_sdk.plugins.manager import PluginManager
    from aib_sdk.protocols import Communicator, OutputHandler


class Fetcher(Protocol):
    """Fetches a ``scriptUri``/``sourceUri``/image URI into the staging area, verifying its sha256."""

    async def fetch(self, uri: str, sha256: str | None = None, *, label: str | None = None) -> Path:
        """Return a local path holding the content of ``uri`` (``--map-uri`` applied, checksum verified)."""
        ...


@dataclass(frozen=True)
class Staging:
    """The local analogue of AIB's ``IT_…`` resource group for one template, and one run inside it.

    ``directory`` = ``AIB_HOME/staging/<templateName>-<sha8>``; ``inputs`` holds fetched scripts and files;
    ``run_directory`` = ``directory/runs/<runId>`` holds ``customization.log`` and ``run.json``; ``work`` holds
    the run's intermediate disks and is removed when the run ends.
    """

    directory: Path
    run_id: str

    @property
    def inputs(self) -> Path:
        return self.directory / "inputs"

    @property
    def run_directory(self) -> Path:
        return self.directory / "runs" / self.run_id

    @property
    def work(self) -> Path:
        return self.run_directory / "work"

    @property
    def log_file(self) -> Path:
        return self.run_directory / "customization.log"

    @property
    def record_file(self) -> Path:
        return self.run_directory / "run.json"


@dataclass
class RunContext:
    """Shared by every provider call of one run."""

    run_id: str
    template_name: str
    template_digest: str
    staging: Staging
    config: Config
    options: BuildOptions
    emit: EventSink
    fetcher: Fetcher
    plugins: PluginManager
    journal: Journal = field(default_factory=Journal.disabled)
    """The run's resource journal (:mod:`aib_sdk.journal`): journal a resource before creating it."""

    @property
    def cache_dir(self) -> Path:
        return self.config.cache

    def warn(self, message: str) -> None:
        self.emit(Warning(message=message))

    def log(self, source: str, line: str, stream: str = "info") -> None:
        self.emit(LogLine(source=source, line=line, stream=stream))

    def progress(
        self,
        task: str,
        label: str,
        done: int,
        total: int | None = None,
        *,
        target: str | None = None,
        region: str | None = None,
    ) -> None:
        self.emit(Progress(task=task, label=label, done=done, total=total, target=target, region=region))

    async def fetch(self, uri: str, sha256: str | None = None, *, label: str | None = None) -> Path:
        return await self.fetcher.fetch(uri, sha256, label=label)


@dataclass
class StepContext:
    """Given to a :class:`~aib_sdk.protocols.Customizer` for one step; keeps the step's last log lines."""

    run: RunContext
    communicator: Communicator
    phase: StepPhase
    index: int
    name: str
    type: str
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    def log(self, line: str, stream: str = "stdout") -> None:
        self.tail.append(line)
        self.run.emit(LogLine(source=self.name, line=line, stream=stream))

    @property
    def on_output(self) -> OutputHandler:
        """An :data:`~aib_sdk.protocols.OutputHandler` that logs each line of a command."""

        def handler(stream: str, line: str) -> None:
            self.log(line, stream)

        return handler
