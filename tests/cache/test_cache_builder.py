"""The step cache in the Builder, on the fakes: prefix reuse, exact invalidation, no stale images, --no-cache,
--resume, races between builds, a failing snapshot, hosts without layers, eviction and the run record."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio
import pytest
from pydantic import BaseModel

from aib_sdk.builder import Builder
from aib_sdk.context import StepContext
from aib_sdk.errors import UsageError
from aib_sdk.events import LogLine, StepFinished, WarningEvent
from aib_sdk.models.specs import StepSpec
from aib_sdk.plugins import hookimpl
from aib_sdk.testing.fakes import FakePlugin, fake_template
from aib_sdk.testing.recorder import EventRecorder

from .conftest import RunBuild

pytestmark = pytest.mark.anyio


def _template(*commands: str, **props: Any) -> dict[str, Any]:
    template = fake_template(steps=0, **props)
    template["customize"] = [
        {"type": "FakeStep", "name": f"s{i + 1}", "commands": [command]} for i, command in enumerate(commands)
    ]
    return template


def _finished(events: EventRecorder) -> list[tuple[str, bool]]:
    return [(e.name, e.cached) for e in events.of_kind(StepFinished) if e.phase == "customize"]


def _record(builder: Builder) -> dict[str, Any]:
    assert builder.staging is not None
    data: dict[str, Any] = json.loads(builder.staging.record_file.read_text())
    return data


def _captured_commands(layered: FakePlugin) -> list[str]:
    return layered.world.machine.disk


def _step_commands(layered: FakePlugin) -> list[str]:
    """Commands the last machine ran for customize steps (not the deprovisioner's)."""
    return [c for c in layered.world.machine.fake_communicator.commands if c.startswith("echo ")]


async def test_unchanged_rebuild_reuses_every_layer(layered: FakePlugin, run_build: RunBuild, aib_events) -> None:
    template = _template("echo one", "echo two", "echo three")
    first, builder = await run_build(template)
    assert first.run_state == "Succeeded"
    assert _finished(aib_events) == [("s1", False), ("s2", False), ("s3", False)]
    assert len(layered.world.snapshots) == 3
    assert [s["stored"] for s in _record(builder)["details"]["cache"]["steps"]] == [True, True, True]
    aib_events.clear()
    second, builder = await run_build(template)
    assert second.run_state == "Succeeded"
    assert _finished(aib_events) == [("s1", True), ("s2", True), ("s3", True)]
    assert _step_commands(layered) == []  # nothing ran again …
    assert _captured_commands(layered)[:3] == ["echo one", "echo two", "echo three"]  # … and the disk has it all
    cached = [e for e in aib_events.of_kind(StepFinished) if e.cached]
    assert all(e.layer and len(e.layer) == 12 for e in cached)
    record = _record(builder)
    assert record["details"]["cache"]["cachedSteps"] == 3
    assert [s["cached"] for s in record["details"]["steps"] if s["phase"] == "customize"] == [True, True, True]
    assert any("3 of 3 step(s) cached" in e.line for e in aib_events.of_kind(LogLine) if e.source == "cache")
    # The --json shape is unchanged: the cache facts live in run.json and the events.
    assert set(second.to_dict()) == set(first.to_dict())


async def test_changing_the_last_step_reruns_only_it_and_leaves_no_stale_state(
    layered: FakePlugin, run_build: RunBuild, aib_events
) -> None:
    await run_build(_template("echo one", "echo two", "echo three"))
    aib_events.clear()
    result, _ = await run_build(_template("echo one", "echo two", "echo THREE"))
    assert result.run_state == "Succeeded"
    assert _finished(aib_events) == [("s1", True), ("s2", True), ("s3", False)]
    assert _step_commands(layered) == ["echo THREE"]
    disk = _captured_commands(layered)
    assert "echo THREE" in disk and "echo three" not in disk
    # A change in the middle reruns it and everything after it.
    aib_events.clear()
    await run_build(_template("echo one", "echo TWO", "echo THREE"))
    assert _finished(aib_events) == [("s1", True), ("s2", False), ("s3", False)]
    assert "echo two" not in _captured_commands(layered)


async def test_script_bytes_behind_an_unchanged_uri_invalidate_the_step(
    layered: FakePlugin, run_build: RunBuild, aib_events, tmp_path: Path
) -> None:
    script = tmp_path / "setup.sh"
    script.write_text("echo version one\n")
    data = tmp_path / "app.conf"
    data.write_text("answer=41\n")
    template = _template("echo first")
    template["customize"] += [
        {"type": "Shell", "name": "script", "scriptUri": "setup.sh"},
        {"type": "File", "name": "config", "sourceUri": "app.conf", "destination": "/tmp/app.conf"},
        {"type": "FakeStep", "name": "last", "commands": ["echo last"]},
    ]
    await run_build(template)
    aib_events.clear()
    await run_build(template)
    assert _finished(aib_events) == [("s1", True), ("script", True), ("config", True), ("last", True)]

    script.write_text("echo version two\n")  # same scriptUri, new bytes
    aib_events.clear()
    await run_build(template)
    assert _finished(aib_events) == [("s1", True), ("script", False), ("config", False), ("last", False)]
    uploads = layered.world.machine.fake_communicator.uploads
    assert any(b"version two" in content for _, _, content in uploads)

    data.write_text("answer=42\n")  # same sourceUri, new bytes
    aib_events.clear()
    await run_build(template)
    assert _finished(aib_events) == [("s1", True), ("script", True), ("config", False), ("last", False)]
    uploaded = {remote: content for _, remote, content in layered.world.machine.fake_communicator.uploads}
    assert uploaded["/tmp/app.conf"] == b"answer=42\n"


async def test_source_and_vm_profile_are_part_of_the_key(layered: FakePlugin, run_build: RunBuild, aib_events) -> None:
    await run_build(_template("echo one"))
    aib_events.clear()
    other = _template("echo one")
    other["source"]["version"] = "2.0.0"
    await run_build(other)
    assert _finished(aib_events) == [("s1", False)]
    aib_events.clear()
    bigger = _template("echo one", vmProfile={"vmSize": "Standard_D4s_v3"})
    await run_build(bigger)
    assert _finished(aib_events) == [("s1", False)]


async def test_the_source_disk_is_read_once_per_version(
    layered: FakePlugin, run_build: RunBuild, aib_events, sha256_reads: list[Path]
) -> None:
    """The base disk's digest (part of the key) is recorded with its device, inode, size, mtime and ctime: an
    unchanged disk is not read again, and one rewritten in place with the same size (mtime put back) is."""
    reads = sha256_reads
    await run_build(_template("echo one"))
    assert len(reads) == 1
    base = reads[0]
    await run_build(_template("echo one"))
    assert len(reads) == 1 and _finished(aib_events)[-1] == ("s1", True)
    stat = base.stat()
    base.write_bytes(base.read_bytes().upper())  # same size, other content
    os.utime(base, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    aib_events.clear()
    await run_build(_template("echo one"))
    assert reads == [base, base] and _finished(aib_events) == [("s1", False)]


async def test_no_cache_runs_everything_and_stores_nothing(
    layered: FakePlugin, run_build: RunBuild, aib_events, cache_dir: Path
) -> None:
    template = _template("echo one", "echo two")
    await run_build(template)
    aib_events.clear()
    result, builder = await run_build(template, cache=False)
    assert result.run_state == "Succeeded"
    assert _finished(aib_events) == [("s1", False), ("s2", False)]
    assert len(layered.world.snapshots) == 2  # only the first build's
    cache = _record(builder)["details"]["cache"]
    assert cache["enabled"] is False and "no-cache" in cache["reason"]


async def test_resume_after_a_failed_step(layered: FakePlugin, run_build: RunBuild, aib_events) -> None:
    layered.world.fail_command("echo two", exit_code=3, output="boom")
    failed, first = await run_build(_template("echo one", "echo two", "echo three"))
    assert failed.run_state == "Failed" and "exit code 3" in failed.last_run_status.message
    assert [s["stored"] for s in _record(first)["details"]["cache"]["steps"]] == [True, False, False]
    layered.world.command_rules.clear()
    aib_events.clear()
    result, builder = await run_build(_template("echo one", "echo two", "echo three"), resume="latest")
    assert result.run_state == "Succeeded"
    assert _finished(aib_events) == [("s1", True), ("s2", False), ("s3", False)]
    lines = [e.line for e in aib_events.of_kind(LogLine) if e.source == "cache"]
    assert any(f"resuming run {first.run_id}" in ln and "step 2 ('s2') failed in that run" in ln for ln in lines)
    assert _record(builder)["details"]["cache"]["resumedFrom"] == first.run_id
    # By id, after editing step 3: step 3 is reported as changed.
    aib_events.clear()
    await run_build(_template("echo one", "echo two", "echo 3"), resume=builder.run_id)
    lines = [e.line for e in aib_events.of_kind(LogLine) if e.source == "cache"]
    assert any("step 3 ('s3') changed since that run" in ln for ln in lines)


async def test_resume_refuses_without_a_run_or_with_no_cache(layered: FakePlugin, run_build: RunBuild) -> None:
    with pytest.raises(UsageError, match="no earlier run"):
        await run_build(_template("echo one"), resume="latest")
    with pytest.raises(UsageError, match="no-cache"):
        await run_build(_template("echo one"), resume="latest", cache=False)
    with pytest.raises(UsageError, match="no run"):
        await run_build(_template("echo one"), resume="20990101T000000Z-abcdef")


async def test_concurrent_identical_builds(layered: FakePlugin, make_builder, aib_events, cache_dir: Path) -> None:
    template = _template("echo one", "echo two", "echo three")
    results: list[Any] = []

    async def build() -> None:
        results.append(await make_builder(template).run())

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(build)
    assert [r.run_state for r in results] == ["Succeeded"] * 3, [r.last_run_status.message for r in results]
    records = sorted((cache_dir / "index").glob("*.json"))
    assert len(records) == 3  # one layer per step, whoever stored it
    aib_events.clear()
    again = await make_builder(template).run()
    assert again.run_state == "Succeeded"
    assert [e.cached for e in aib_events.of_kind(StepFinished) if e.phase == "customize"] == [True] * 3
    assert _captured_commands(layered)[:3] == ["echo one", "echo two", "echo three"]


async def test_a_snapshot_that_fails_midway_leaves_nothing_usable(
    layered: FakePlugin, run_build: RunBuild, aib_events, cache_dir: Path
) -> None:
    layered.world.snapshot_error = "QMP went away"
    result, _ = await run_build(_template("echo one", "echo two"))
    assert result.run_state == "Succeeded"  # the build itself does not depend on the cache
    assert any("QMP went away" in e.line for e in aib_events.of_kind(LogLine) if e.source == "cache")
    assert list((cache_dir / "index").glob("*.json")) == [] and list((cache_dir / "tmp").iterdir()) == []
    layered.world.snapshot_error = None
    aib_events.clear()
    await run_build(_template("echo one", "echo two"))
    assert _finished(aib_events) == [("s1", False), ("s2", False)]
    assert len(list((cache_dir / "index").glob("*.json"))) == 2


async def test_hosts_without_layers_build_normally(aib_fakes: FakePlugin, run_build: RunBuild, aib_events) -> None:
    template = _template("echo one")
    await run_build(template)
    aib_events.clear()
    result, builder = await run_build(template)
    assert result.run_state == "Succeeded"
    assert _finished(aib_events) == [("s1", False)]
    assert "keeps no disk layers" in _record(builder)["details"]["cache"]["reason"]
    assert not [e for e in aib_events.of_kind(LogLine) if e.source == "cache"]


async def test_windows_guests_cache_too(layered: FakePlugin, run_build: RunBuild, aib_events) -> None:
    template = _template("echo one", "echo two")
    template["source"]["osType"] = "Windows"
    await run_build(template)
    aib_events.clear()
    await run_build(template)
    assert _finished(aib_events) == [("s1", True), ("s2", True)]


async def test_lru_eviction_keeps_the_store_under_max_size(
    layered: FakePlugin, run_build: RunBuild, monkeypatch: pytest.MonkeyPatch, cache_dir: Path
) -> None:
    await run_build(_template("echo build 0 " + "x" * 100))
    (layer,) = (cache_dir / "data").iterdir()
    cap = int(layer.stat().st_size * 2.5)  # room for two fake layers of this size
    monkeypatch.setenv("AIB_CACHE_MAX_SIZE", str(cap))
    for n in range(1, 6):
        result, _ = await run_build(_template(f"echo build {n} " + "x" * 100))
        assert result.run_state == "Succeeded"
    kept = sorted((cache_dir / "data").iterdir(), key=lambda p: p.stat().st_mtime)
    assert sum(p.stat().st_size for p in kept) <= cap and len(kept) == 2
    assert "echo build 5" in kept[-1].read_text()  # the most recent layer stays


class SneakySpec(StepSpec):
    type: Literal["Sneaky"]
    hidden_input: str = ""


class SneakyStep:
    """Fetches a URI its spec does not name as one (a field not ending in ``Uri``): it cannot be keyed."""

    type_name: ClassVar[str] = "Sneaky"
    spec_model: ClassVar[type[BaseModel]] = SneakySpec
    validator_model: ClassVar[type[BaseModel] | None] = None

    async def run(self, spec: BaseModel, step: StepContext) -> None:
        assert isinstance(spec, SneakySpec)
        await step.run.fetch(spec.hidden_input)
        await step.communicator.run("echo sneaky")


class UncacheableStep(SneakyStep):
    type_name: ClassVar[str] = "Uncacheable"
    cacheable: ClassVar[bool] = False


class UncacheableSpec(SneakySpec):
    type: Literal["Uncacheable"]  # type: ignore[assignment]


UncacheableStep.spec_model = UncacheableSpec


class _Plugin:
    @hookimpl
    def aib_register_customizers(self) -> list[type[Any]]:
        return [SneakyStep, UncacheableStep]


async def test_steps_that_cannot_be_keyed_store_no_layer_from_there_on(
    layered: FakePlugin, run_build: RunBuild, aib_register, aib_events, tmp_path: Path
) -> None:
    aib_register(_Plugin())
    (tmp_path / "hidden.txt").write_text("v1")
    template = _template("echo one")
    template["customize"] += [
        {"type": "Sneaky", "name": "sneaky", "hiddenInput": "hidden.txt"},
        {"type": "FakeStep", "name": "after", "commands": ["echo after"]},
    ]
    result, builder = await run_build(template)
    assert result.run_state == "Succeeded", result.last_run_status.message
    slots = _record(builder)["details"]["cache"]["steps"]
    assert [s["stored"] for s in slots] == [True, False, False]
    assert any("which its spec does not name" in e.line for e in aib_events.of_kind(LogLine) if e.source == "cache")
    aib_events.clear()
    await run_build(template)
    assert _finished(aib_events) == [("s1", True), ("sneaky", False), ("after", False)]

    template["customize"][1] = {"type": "Uncacheable", "name": "uncacheable", "hiddenInput": "hidden.txt"}
    result, builder = await run_build(template)
    slots = _record(builder)["details"]["cache"]["steps"]
    assert [s["key"] is None for s in slots] == [False, True, True]
    assert "not cacheable" in slots[1]["note"]


async def test_an_input_that_cannot_be_fetched_still_fails_in_its_step(
    layered: FakePlugin, run_build: RunBuild
) -> None:
    template = _template("echo one")
    template["customize"].append({"type": "Shell", "name": "setup", "scriptUri": "missing.sh"})
    result, _ = await run_build(template)
    assert result.run_state == "Failed"
    assert "step 'setup' failed" in result.last_run_status.message
    assert "missing.sh" in result.last_run_status.message


async def test_an_unusable_cache_directory_only_costs_the_cache(
    layered: FakePlugin, run_build: RunBuild, aib_events, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("AIB_CACHE_DIR", str(blocker / "layers"))
    result, builder = await run_build(_template("echo one"))
    assert result.run_state == "Succeeded", result.last_run_status.message
    assert any("step cache unavailable" in w.message for w in aib_events.of_kind(WarningEvent))
    assert _record(builder)["details"]["cache"]["enabled"] is False
