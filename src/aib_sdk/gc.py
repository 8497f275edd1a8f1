"""``aib gc``: release what dead runs left behind, and record those runs as ``Failed`` (interrupted).

A run is *dead* when its journal's owner process (pid + start time + boot id, :mod:`aib_sdk.journal`) no longer
runs. For each dead run, every resource still open in its journal is released, newest first, by the releaser
registered for its kind (plugin hook ``aib_register_releasers``); its ``work/`` directory is removed; and, if it
never wrote ``run.json``, one is written with ``runState: Failed`` and a message naming the phase (and step) it
was interrupted in. A live run is never touched; a resource whose release fails stays open for the next gc.

```python
from aib_sdk.gc import collect_garbage
for run in await collect_garbage(config, plugins, dry_run=True):
    print("\n".join(run.lines()))
```
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from aib_sdk.cache.settings import CacheSettings
from aib_sdk.cache.store import LayerStore
from aib_sdk.context import Staging
from aib_sdk.journal import JOURNAL_NAME, Journal, JournalState, read_journal
from aib_sdk.options import BuildOptions
from aib_sdk.runtime import cleanup_scope
from aib_sdk.staging import RunRecord, list_runs, write_record

if TYPE_CHECKING:
    from aib_sdk.config import Config
    from aib_sdk.plugins.manager import PluginManager

RELEASE_SECONDS = 60.0
"""How long one release (kill a VM, abort an upload, delete a blob) may take."""


@dataclass
class Release:
    """One resource gc released (or could not)."""

    kind: str
    what: str
    ok: bool
    detail: str


@dataclass
class DeadRun:
    """A run whose builder died, and what gc did (or, with ``dry_run``, would do) about it."""

    run_id: str
    template_name: str
    run_directory: Path
    phase: str
    activity: str
    pid: int | None
    dry_run: bool = False
    releases: list[Release] = field(default_factory=list)
    work_removed: Path | None = None
    marked_failed: bool = False
    kept: list[str] = field(default_factory=list)
    ended: str = ""
    """The final state the run recorded itself (its builder died later, or a release failed), else empty."""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.releases)

    @property
    def message(self) -> str:
        where = f"{self.phase} ({self.activity})" if self.activity else self.phase
        text = (
            f"the build was interrupted during {where}: its process (pid {self.pid}) ended without finishing; "
            f"aib gc released {sum(r.ok for r in self.releases)} leftover resource(s)"
        )
        failed = sum(not r.ok for r in self.releases)
        return text + (f"; {failed} could not be released (run aib gc again)" if failed else "")

    def lines(self) -> list[str]:
        """What gc did for this run, one line each (``would …`` with ``dry_run``)."""
        verb = "would release" if self.dry_run else "released"
        how = f"ended {self.ended}, leftovers remain" if self.ended else f"interrupted during {self.phase}"
        out = [f"run {self.run_id} ({self.template_name}): {how}"]
        for r in self.releases:
            out.append(f"  {verb} {r.kind}: {r.detail}" if r.ok else f"  FAILED to release {r.kind}: {r.detail}")
        if self.work_removed is not None:
            out.append(f"  {'would remove' if self.dry_run else 'removed'} {self.work_removed}")
        out.extend(f"  left running (kept on purpose): {k}" for k in self.kept)
        if self.marked_failed:
            out.append(f"  {'would mark' if self.dry_run else 'marked'} the run Failed")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "templateName": self.template_name,
            "runDirectory": str(self.run_directory),
            "phase": self.phase,
            "activity": self.activity,
            "pid": self.pid,
            "dryRun": self.dry_run,
            "released": [r.__dict__ for r in self.releases],
            "workRemoved": str(self.work_removed) if self.work_removed else None,
            "markedFailed": self.marked_failed,
            "kept": self.kept,
            "ended": self.ended or None,
        }


def _dead_journal(record: RunRecord) -> JournalState | None:
    """The run's journal when its owner is dead and something is left to do; else None (sync)."""
    path = record.run_directory / JOURNAL_NAME
    if not path.is_file():
        return None
    state = read_journal(path)
    if state.owner is None or state.owner.alive():
        return None
    if state.open_entries or not record.data or (record.run_directory / "work").exists():
        return state
    return None


class _Lock:
    """``AIB_HOME/.gc.lock``: one gc at a time (flock; released when the process dies)."""

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(home / ".gc.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def close(self) -> None:
        os.close(self.fd)  # releases the lock


async def collect_garbage(
    config: Config, plugins: PluginManager, *, dry_run: bool = False, options: BuildOptions | None = None
) -> list[DeadRun]:
    """Release every journaled resource of every dead run under ``AIB_HOME``; mark those runs Failed.

    Returns one :class:`DeadRun` per run it handled (with ``dry_run``: would handle, touching nothing).
    ``options`` reach the releasers (e.g. ``credential`` for Azure), as they reach a build's providers.
    """
    options = options or BuildOptions(config=config, plugins=plugins)
    lock = await anyio.to_thread.run_sync(_Lock, config.home)
    try:
        if not dry_run:
            await anyio.to_thread.run_sync(lock.acquire, abandon_on_cancel=True)
        found: list[DeadRun] = []
        for record in await list_runs(config):
            state = await anyio.to_thread.run_sync(_dead_journal, record)
            if state is not None:
                found.append(await _collect_run(record, state, config, plugins, options, dry_run))
        if not dry_run:
            await sweep_layer_store(config)
        return found
    finally:
        lock.close()


async def sweep_layer_store(config: Config) -> list[Path]:
    """Remove what dead builds left in the step cache's layer store: temporaries whose writer's ``flock`` is gone,
    layer files without a record. Layers (and leases, which die with their process) of live builds stay."""
    try:
        store = LayerStore(CacheSettings.from_config(config).directory)
        return await anyio.to_thread.run_sync(store.sweep)
    except Exception:  # a broken [cache] table or an unreadable store: the build reports it, gc goes on
        return []


async def _collect_run(
    record: RunRecord,
    state: JournalState,
    config: Config,
    plugins: PluginManager,
    options: BuildOptions,
    dry_run: bool,
) -> DeadRun:
    run = DeadRun(
        run_id=record.run_id,
        template_name=state.template_name or record.template_name,
        run_directory=record.run_directory,
        phase=state.phase,
        activity=state.activity,
        pid=state.owner.pid if state.owner else None,
        dry_run=dry_run,
        kept=[f"{e.what or e.kind}" + (f" ({e.note})" if e.note else "") for e in state.kept_entries],
        ended=str(record.last_run_status.get("runState") or "") if record.data else "",
    )
    journal = Journal(state.path)
    for entry in reversed(state.open_entries):
        release = await anyio.to_thread.run_sync(plugins.releaser, entry.kind)  # may import its provider
        label = entry.what or entry.kind
        if release is None:
            run.releases.append(Release(entry.kind, label, False, f"{label}: no installed provider releases it"))
            continue
        if dry_run:
            run.releases.append(Release(entry.kind, label, True, _describe(label, entry.data)))
            continue
        try:
            with cleanup_scope(RELEASE_SECONDS) as bounded:
                detail = await release(entry.data, config, options)
            if bounded.cancelled_caught:
                raise TimeoutError(f"took longer than {RELEASE_SECONDS:g}s")
        except Exception as exc:
            run.releases.append(Release(entry.kind, label, False, f"{label}: {type(exc).__name__}: {exc}"))
            continue
        await anyio.to_thread.run_sync(functools.partial(journal.release_sync, entry.id, by="gc"))
        run.releases.append(Release(entry.kind, label, True, detail))
    work = record.run_directory / "work"
    if await anyio.Path(work).exists():
        run.work_removed = work
        if not dry_run:
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(work, ignore_errors=True))
    if not record.data:
        run.marked_failed = True
        if not dry_run:
            await write_record(Staging(record.staging_directory, record.run_id), _failed_record(record, state, run))
    return run


def _describe(label: str, data: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in data.items() if isinstance(v, str | int) and k not in ("token",))
    return f"{label} ({shown})" if shown else label


def _failed_record(record: RunRecord, state: JournalState, run: DeadRun) -> dict[str, Any]:
    """``run.json`` of an interrupted run (the shape of ``aib build --json``, plus what gc did)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "runId": record.run_id,
        "templateName": run.template_name,
        "lastRunStatus": {
            "runState": "Failed",
            "runSubState": state.phase,
            "message": run.message,
            "startTime": state.started or None,
            "endTime": now,
        },
        "runOutputs": {},
        "source": {"exactVersion": None},
        "stagingDirectory": str(record.staging_directory),
        "details": {"runDirectory": str(record.run_directory), "interrupted": True, "gc": run.lines()},
    }


async def quick_gc(config: Config, plugins: PluginManager, *, timeout: float = 60.0) -> list[DeadRun]:
    """What ``aib build`` runs first: :func:`collect_garbage`, bounded in time, never failing the caller."""
    with anyio.move_on_after(timeout), contextlib.suppress(Exception):
        return await collect_garbage(config, plugins)
    return []
