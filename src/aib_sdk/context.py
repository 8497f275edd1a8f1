"""What a provider call receives: the run's identity, staging paths, config, events and the fetcher."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from aib_sdk.config import Config
from aib_sdk.events import EventSink, LogLine, Progress, StepPhase, TargetState, TargetStatus, WarningEvent
from aib_sdk.journal import Journal
from aib_sdk.options import BuildOptions, provider_settings

if TYPE_CHECKING:
    import ssl

    import httpx

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

    def __post_init__(self) -> None:
        # Providers read their settings from their own table; the caller's (BuildOptions.settings and the
        # cross-provider flags) lie over it, however the context was made.
        self.config = self.config.with_settings(provider_settings(self.options))

    @property
    def cache_dir(self) -> Path:
        return self.config.cache

    def warn(self, message: str) -> None:
        self.emit(WarningEvent(message=message))

    def target_status(
        self,
        run_output_name: str,
        type_name: str,
        state: TargetState,
        *,
        region: str | None = None,
        message: str = "",
        artifact_id: str | None = None,
        artifact_uri: str | None = None,
    ) -> None:
        """Emit a :class:`~aib_sdk.events.TargetStatus` for a target (``region`` None) or one of its regions."""
        self.emit(
            TargetStatus(
                run_output_name=run_output_name,
                type=type_name,
                region=region,
                state=state,
                message=message,
                artifact_id=artifact_id,
                artifact_uri=artifact_uri,
            )
        )

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
        unit: Literal["bytes", "steps"] = "bytes",
    ) -> None:
        self.emit(Progress(task=task, label=label, done=done, total=total, target=target, region=region, unit=unit))

    async def fetch(self, uri: str, sha256: str | None = None, *, label: str | None = None) -> Path:
        return await self.fetcher.fetch(uri, sha256, label=label)

    def http_client(
        self,
        *,
        retry: bool = True,
        verify: ssl.SSLContext | str | bool = True,
        timeout: httpx.Timeout | float | None = None,
        limits: httpx.Limits | None = None,
        follow_redirects: bool = True,
    ) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` over the run's transport (``BuildOptions.http_transport``), retrying by the
        one policy (see :mod:`aib_sdk.runtime.http`); use it as ``async with ctx.http_client() as client``."""
        from aib_sdk.runtime.http import DEFAULT_TIMEOUT, http_client

        return http_client(
            transport=self.options.http_transport,
            retry=retry,
            verify=verify,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            limits=limits,
            follow_redirects=follow_redirects,
            on_retry=lambda attempt, exc, delay: self.log("http", f"{exc}; retrying in {delay:.1f}s"),
        )


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
