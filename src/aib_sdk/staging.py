"""Staging areas and run records under ``AIB_HOME`` (the local analogue of AIB's ``IT_…`` resource group).

Layout::

    AIB_HOME/staging/<templateName>-<sha8>/        one per template version (sha8 = first 8 hex of its digest)
        template.json                               the template's properties as run (after parameters)
        inputs/<sha256>/<name>                      fetched scripts and files, by content digest
        runs/<runId>/customization.log              the run's log (see :mod:`aib_sdk.eventlog`)
        runs/<runId>/run.json                       the run record (BuildResult JSON + details)
        runs/<runId>/journal.jsonl                  its resource journal (see :mod:`aib_sdk.journal`)
        runs/<runId>/work/                          intermediate disks; removed when the run ends

``runId`` = UTC ``YYYYMMDDTHHMMSSZ`` + ``-`` + 6 hex, so run ids sort by start time.

API (all filesystem work runs in worker threads):

- ``new_run_id(now: datetime | None = None) -> str``
- ``safe_template_name(name: str) -> str`` — a name usable as a directory name (refuses traversal)
- ``staging_directory(config: Config, template_name: str, digest: str) -> Path``
- ``async create_staging(config, template_name, digest, run_id) -> Staging`` — makes inputs/, runs/<id>/, work/
  (the run directory exclusively: :class:`FileExistsError` if that run id is taken)
- ``async write_record(staging: Staging, record: Mapping[str, Any]) -> None`` — atomic write of run.json
- ``async write_template(staging: Staging, properties: Mapping[str, Any]) -> None`` — ``template.json``, once
- ``async remove_work(staging: Staging) -> None``
- ``async list_runs(config: Config, template_name: str | None = None) -> list[RunRecord]`` — newest first
- ``async load_run(config: Config, run_id: str) -> RunRecord`` — raises :class:`UsageError` if unknown
- ``async delete_staging(config: Config, template_name: str) -> list[Path]`` — removes every staging
  directory of that template (all digests); returns what was removed; raises :class:`UsageError` if none.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from aib_sdk.config import Config
from aib_sdk.errors import UsageError
from aib_sdk.journal import JOURNAL_NAME, read_journal
from aib_sdk.private_files import ensure_private_home, make_private_dir, write_private
from aib_sdk.redaction import redact

if TYPE_CHECKING:  # ``aib runs`` reads records without loading the event models these import
    from aib_sdk.context import Staging

RUN_ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
_NAME_OK = re.compile(r"[^A-Za-z0-9._-]")
_STAGING_DIR = re.compile(r"^(?P<name>.+)-(?P<sha8>[0-9a-f]{8})$")


def new_run_id(now: datetime | None = None) -> str:
    """A fresh run id: UTC timestamp ``YYYYMMDDTHHMMSSZ`` + ``-`` + 6 random hex digits."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def safe_template_name(name: str) -> str:
    """``name`` with characters outside ``[A-Za-z0-9._-]`` replaced by ``_``; refuses empty and dot names."""
    cleaned = _NAME_OK.sub("_", name.strip())[:64]
    if not cleaned or set(cleaned) <= {"."}:
        raise UsageError(f"invalid template name {name!r}")
    return cleaned


def staging_directory(config: Config, template_name: str, digest: str) -> Path:
    """``AIB_HOME/staging/<templateName>-<sha8>``."""
    sha8 = (re.sub(r"[^0-9a-f]", "", digest.lower()) + "0" * 8)[:8]
    return config.home / "staging" / f"{safe_template_name(template_name)}-{sha8}"


async def create_staging(config: Config, template_name: str, digest: str, run_id: str) -> Staging:
    """Create the staging directory of a template and the directories of one run in it."""
    from aib_sdk.context import Staging

    staging = Staging(staging_directory(config, template_name, digest), run_id)

    def make() -> None:
        ensure_private_home(config.home)
        make_private_dir(staging.inputs)
        make_private_dir(staging.run_directory.parent)
        staging.run_directory.mkdir(mode=0o700)  # exclusive: a run id is never shared (FileExistsError)
        staging.work.mkdir(mode=0o700)

    await anyio.to_thread.run_sync(make)
    return staging


async def write_record(staging: Staging, record: Mapping[str, Any]) -> None:
    """Write ``run.json`` atomically (a temporary file renamed into place)."""
    text = redact(json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    target = staging.record_file
    await anyio.to_thread.run_sync(write_private, target, text)


async def write_template(staging: Staging, properties: Mapping[str, Any]) -> None:
    """Keep the template's (evaluated) ``properties`` as ``template.json`` in the staging directory, once.

    Query strings of URIs (SAS tokens) and known secrets are left out (:mod:`aib_sdk.redaction`).
    """
    target = staging.directory / "template.json"
    text = json.dumps(redact(dict(properties)), indent=2, default=str) + "\n"

    def write() -> None:
        if not target.exists():
            write_private(target, text)

    await anyio.to_thread.run_sync(write)


def resource_group_record(
    template_name: str, group: str | None, tags: Mapping[str, str] | None, location: str | None = None
) -> dict[str, Any]:
    """What the staging directory stands for, as AIB records its staging resource group: the asked
    ``stagingResourceGroup`` (recorded; the directory is the local stand-in), the template's ``location``, and
    ``managedResourceTags`` plus AIB's own default tags (``createdBy``, ``imageTemplateName``)."""
    return {
        "stagingResourceGroup": group or None,
        "location": location,
        "managedResourceTags": {**(tags or {}), "createdBy": "aib-sdk", "imageTemplateName": template_name},
    }


async def write_resource_group(staging: Staging, record: Mapping[str, Any]) -> None:
    """``resource-group.json`` in the staging directory (rewritten by each run, atomically)."""
    target = staging.directory / "resource-group.json"
    text = redact(json.dumps({**record, "exactStagingResourceGroup": str(staging.directory)}, indent=2) + "\n")
    await anyio.to_thread.run_sync(write_private, target, text)


async def remove_work(staging: Staging) -> None:
    """Remove the run's ``work/`` directory (intermediate disks)."""
    await anyio.to_thread.run_sync(lambda: shutil.rmtree(staging.work, ignore_errors=True))


@dataclass(frozen=True)
class RunRecord:
    """One run found on disk: where it is and what its ``run.json`` says (empty if it was never written)."""

    run_id: str
    template_name: str
    staging_directory: Path
    run_directory: Path
    data: dict[str, Any] = field(default_factory=dict)
    inferred: dict[str, Any] = field(default_factory=dict)
    """For a run without ``run.json``: ``runState`` from its journal (``Running`` while its builder lives,
    ``Failed`` once it died) and ``startTime``."""

    @property
    def log_file(self) -> Path:
        return self.run_directory / "customization.log"

    @property
    def record_file(self) -> Path:
        return self.run_directory / "run.json"

    @property
    def last_run_status(self) -> dict[str, Any]:
        status = self.data.get("lastRunStatus")
        return dict(status) if isinstance(status, dict) else dict(self.inferred)

    @property
    def run_state(self) -> str:
        """The final ``runState``, or ``"Unknown"`` when the run never wrote its record."""
        return str(self.last_run_status.get("runState", "Unknown"))


def _read_run(staging_dir: Path, run_dir: Path) -> RunRecord:
    match = _STAGING_DIR.match(staging_dir.name)
    fallback_name = match["name"] if match else staging_dir.name
    data: dict[str, Any] = {}
    try:
        loaded = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            data = loaded
    except (OSError, ValueError):
        pass
    inferred: dict[str, Any] = {}
    if not data and (run_dir / JOURNAL_NAME).is_file():
        journal = read_journal(run_dir / JOURNAL_NAME)
        if journal.owner is not None:
            inferred = {
                "runState": "Running" if journal.owner.alive() else "Failed",
                "runSubState": journal.phase,
                "startTime": journal.started or None,
            }
    name = data.get("templateName")
    return RunRecord(
        run_id=run_dir.name,
        template_name=name if isinstance(name, str) else fallback_name,
        staging_directory=staging_dir,
        run_directory=run_dir,
        data=data,
        inferred=inferred,
    )


def _scan(root: Path, template_name: str | None) -> list[RunRecord]:
    records: list[RunRecord] = []
    if not root.is_dir():
        return records
    for staging_dir in root.iterdir():
        match = _STAGING_DIR.match(staging_dir.name)
        if not staging_dir.is_dir() or not match:
            continue
        if template_name is not None and match["name"] != safe_template_name(template_name):
            continue
        runs = staging_dir / "runs"
        if not runs.is_dir():
            continue
        for run_dir in runs.iterdir():
            if run_dir.is_dir() and RUN_ID_PATTERN.match(run_dir.name):
                records.append(_read_run(staging_dir, run_dir))
    records.sort(key=lambda r: r.run_id, reverse=True)
    return records


async def list_runs(config: Config, template_name: str | None = None) -> list[RunRecord]:
    """Every run under ``AIB_HOME/staging`` (optionally of one template), newest first."""
    root = config.home / "staging"
    return await anyio.to_thread.run_sync(_scan, root, template_name)


async def load_run(config: Config, run_id: str) -> RunRecord:
    """The run with id ``run_id``; :class:`UsageError` when there is none."""
    if not RUN_ID_PATTERN.match(run_id):
        raise UsageError(f"not a run id: {run_id!r} (expected YYYYMMDDTHHMMSSZ-xxxxxx)")
    for record in await list_runs(config):
        if record.run_id == run_id:
            return record
    raise UsageError(f"no run {run_id} under {config.home / 'staging'}")


async def delete_staging(config: Config, template_name: str) -> list[Path]:
    """Remove every staging directory of ``template_name``; return the removed paths."""
    name = safe_template_name(template_name)
    root = config.home / "staging"

    def delete() -> list[Path]:
        removed: list[Path] = []
        if root.is_dir():
            for path in sorted(root.iterdir()):
                match = _STAGING_DIR.match(path.name)
                if match and match["name"] == name and path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                    removed.append(path)
        return removed

    removed = await anyio.to_thread.run_sync(delete)
    if not removed:
        raise UsageError(f"no staging directory for template {template_name!r} under {root}")
    return removed
