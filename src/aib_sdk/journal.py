"""The run's resource journal: ``runs/<runId>/journal.jsonl``, append-only JSON lines, fsync'd.

Before a run creates anything that outlives a crash of its process (a VM, a temporary directory outside the run,
an S3 multipart upload, a blob, a gallery claim …) it appends an ``acquire`` entry naming the resource's *kind*
and what a releaser needs to remove it; once the resource is cleaned up (or handed over, e.g. a completed upload
that is the run's output) it appends ``release``. A kept VM (``errorHandling: abort``) is marked ``keep``.
``aib gc`` (:mod:`aib_sdk.gc`) reads the journals of runs whose owner process is dead and releases every entry
still open, with the releaser registered for its kind (plugin hook ``aib_register_releasers``).

Lines::

    {"op": "owner", "pid", "start", "boot", "host", "runId", "templateName", "time"}   always the first line
    {"op": "acquire", "id", "kind", "data": {...}, "what", "time"}
    {"op": "update", "id", "data": {...}}              more data learned after creation (an upload id)
    {"op": "release", "id", "time", "by"?}             "by": "gc" when aib gc released it
    {"op": "keep", "id", "what"}                        left running on purpose (a kept VM)
    {"op": "phase", "phase", "activity"?, "time"}      where the run was (not fsync'd: advisory)

The owner is the process id plus its start time (``/proc/<pid>/stat``) and the boot id, so a pid reused by
another process, or a reboot, never makes a dead run look alive, and a live run is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from aib_sdk.runtime import cleanup_scope

if TYPE_CHECKING:
    from aib_sdk.config import Config
    from aib_sdk.options import BuildOptions

JOURNAL_NAME = "journal.jsonl"
RELEASE_SECONDS = 30.0

Releaser = Callable[[dict[str, Any], "Config", "BuildOptions"], Awaitable[str]]
"""``await release(data, config, options)`` → what it removed (hook ``aib_register_releasers``); ``options`` carries
what an embedding passes to builds (e.g. a credential)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of ``/proc/<pid>/stat``); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Owner:
    """The process that runs a build: pid + start time + boot id + host."""

    pid: int
    start: int | None
    boot: str
    host: str

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(pid, process_start_time(pid), boot_id(), socket.gethostname())

    def alive(self) -> bool:
        """Whether the owner still runs. An owner on another host counts as alive (never touched from here)."""
        if self.host != socket.gethostname():
            return True
        if self.boot and self.boot != boot_id():
            return False
        start = process_start_time(self.pid)
        return start is not None and (self.start is None or start == self.start)

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start": self.start, "boot": self.boot, "host": self.host}


@dataclass
class Entry:
    """One journaled resource and its state: ``open``, ``released`` or ``kept``."""

    id: str
    kind: str
    data: dict[str, Any]
    what: str = ""
    time: str = ""
    state: str = "open"
    note: str = ""
    """For a kept resource: what the run said when keeping it (e.g. how to reach a kept VM)."""


@dataclass
class JournalState:
    """What a journal file says: its owner, resources (in acquisition order) and the run's last phase."""

    path: Path
    owner: Owner | None = None
    run_id: str = ""
    template_name: str = ""
    started: str = ""
    phase: str = "Queued"
    activity: str = ""
    entries: dict[str, Entry] = field(default_factory=dict)

    @property
    def open_entries(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.state == "open"]

    @property
    def kept_entries(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.state == "kept"]


def read_journal(path: Path) -> JournalState:
    """Parse a journal (sync); a torn last line (the process died mid-write) is ignored."""
    state = JournalState(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return state
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if not isinstance(item, dict):
            continue
        op = item.get("op")
        if op == "owner":
            state.owner = Owner(int(item["pid"]), item.get("start"), str(item.get("boot", "")), str(item["host"]))
            state.run_id = str(item.get("runId", ""))
            state.template_name = str(item.get("templateName", ""))
            state.started = str(item.get("time", ""))
        elif op == "acquire":
            entry = Entry(str(item["id"]), str(item["kind"]), dict(item.get("data") or {}), str(item.get("what", "")))
            entry.time = str(item.get("time", ""))
            state.entries[entry.id] = entry
        elif op == "update" and item.get("id") in state.entries:
            state.entries[item["id"]].data.update(item.get("data") or {})
        elif op in ("release", "keep") and item.get("id") in state.entries:
            state.entries[item["id"]].state = "released" if op == "release" else "kept"
            if op == "keep":
                state.entries[item["id"]].note = str(item.get("what") or "")
        elif op == "phase":
            state.phase = str(item.get("phase") or state.phase)
            state.activity = str(item.get("activity") or "")
    return state


class Journal:
    """Appends to one run's journal. Every method has a sync form (for code in worker threads) and an async one.

    A disabled journal (:meth:`disabled`, what a :class:`~aib_sdk.context.RunContext` made without one carries)
    accepts every call and writes nothing.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def disabled(cls) -> Journal:
        return cls(None)

    @classmethod
    def create(cls, run_directory: Path, *, run_id: str, template_name: str) -> Journal:
        """Start the journal of a new run (sync): its first line names the owner (this process)."""
        journal = cls(run_directory / JOURNAL_NAME)
        owner = Owner.current()
        journal.append({"op": "owner", **owner.to_json(), "runId": run_id, "templateName": template_name})
        return journal

    def append(self, item: Mapping[str, Any], *, durable: bool = True) -> None:
        """Append one line (sync); fsync'd unless ``durable`` is False."""
        if self.path is None:
            return
        line = json.dumps({**item, "time": item.get("time") or _now()}, default=str) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)

    # Resources --------------------------------------------------------------------------------------------

    def acquire_sync(self, kind: str, data: Mapping[str, Any], what: str = "") -> str:
        """Journal a resource about to be created; returns its entry id (for :meth:`release_sync`)."""
        entry_id = secrets.token_hex(6)
        self.append({"op": "acquire", "id": entry_id, "kind": kind, "data": dict(data), "what": what})
        return entry_id

    def update_sync(self, entry_id: str, data: Mapping[str, Any]) -> None:
        self.append({"op": "update", "id": entry_id, "data": dict(data)})

    def release_sync(self, entry_id: str, *, by: str | None = None) -> None:
        item: dict[str, Any] = {"op": "release", "id": entry_id}
        if by:
            item["by"] = by
        self.append(item)

    def keep_sync(self, entry_id: str, what: str = "") -> None:
        self.append({"op": "keep", "id": entry_id, "what": what})

    async def acquire(self, kind: str, data: Mapping[str, Any], what: str = "") -> str:
        if self.path is None:
            return secrets.token_hex(6)
        # Shielded: once the line is being written, the caller learns its id (and will release it).
        with anyio.CancelScope(shield=True):
            entry_id: str = await anyio.to_thread.run_sync(self.acquire_sync, kind, dict(data), what)
        return entry_id

    async def update(self, entry_id: str, data: Mapping[str, Any]) -> None:
        if self.path is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.update_sync, entry_id, dict(data))

    async def release(self, entry_id: str) -> None:
        """Mark the resource cleaned up (shielded, bounded: call it from cleanup code)."""
        if self.path is not None:
            with cleanup_scope(RELEASE_SECONDS):
                await anyio.to_thread.run_sync(self.release_sync, entry_id)

    async def keep(self, entry_id: str, what: str = "") -> None:
        if self.path is not None:
            with cleanup_scope(RELEASE_SECONDS):
                await anyio.to_thread.run_sync(self.keep_sync, entry_id, what)

    @asynccontextmanager
    async def holding(self, kind: str, data: Mapping[str, Any], what: str = "") -> AsyncIterator[str]:
        """``acquire`` before the block, ``release`` after it however it ends: for resources the block itself
        creates and removes (its own cleanup runs inside the block)."""
        entry_id = await self.acquire(kind, data, what)
        try:
            yield entry_id
        finally:
            await self.release(entry_id)

    # Where the run is -------------------------------------------------------------------------------------

    def phase(self, phase: str, activity: str = "") -> None:
        """Note the run's phase (sync, not fsync'd: one small append, fine on the event loop)."""
        with contextlib.suppress(OSError):
            self.append({"op": "phase", "phase": phase, "activity": activity}, durable=False)


async def release_path(data: dict[str, Any], config: Config, options: BuildOptions) -> str:
    """The core's releaser of kind ``file``: remove ``data["path"]`` (a file or a whole directory)."""
    path = Path(str(data["path"]))

    def remove() -> bool:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            return True
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    removed = await anyio.to_thread.run_sync(remove)
    return f"removed {path}" if removed else f"{path} was already gone"
