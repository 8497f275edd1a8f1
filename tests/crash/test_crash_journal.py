"""The resource journal, ``aib gc`` and ``aib runs`` on runs whose builder died, and many builds at once (fakes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from aib_sdk.builder import Builder
from aib_sdk.cache.settings import CacheSettings
from aib_sdk.cache.store import LayerStore
from aib_sdk.config import Config
from aib_sdk.gc import collect_garbage
from aib_sdk.journal import JOURNAL_NAME, Journal, Owner, process_start_time, read_journal
from aib_sdk.options import BuildOptions
from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.staging import create_staging, list_runs
from aib_sdk.testing.fakes import FakePlugin, fake_template

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def dead_owner() -> Owner:
    """The owner record of a process that ran a moment ago and is gone now."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    start = process_start_time(proc.pid)
    assert start is not None
    proc.communicate(b"")
    return Owner(proc.pid, start, Owner.current().boot, Owner.current().host)


async def dead_run(config: Config, name: str = "crashed") -> tuple[Path, Journal]:
    """A run directory whose journal names a dead owner (as ``kill -9`` of its builder leaves it)."""
    staging = await create_staging(config, name, "ab" * 32, "20260101T000000Z-abcdef")
    journal = Journal(staging.run_directory / JOURNAL_NAME)
    owner = dead_owner()
    journal.append({"op": "owner", **owner.to_json(), "runId": staging.run_id, "templateName": name})
    journal.phase("Customizing", "customize step 'install'")
    return staging.run_directory, journal


def test_owner_is_pid_and_start_time() -> None:
    me = Owner.current()
    assert me.alive()
    assert not dead_owner().alive()
    assert not Owner(me.pid, (me.start or 0) + 1, me.boot, me.host).alive()  # a reused pid is another process
    assert not Owner(me.pid, me.start, "another-boot", me.host).alive()
    assert Owner(1, 0, "x", "another-host").alive()  # never judged from here


def test_journal_states_and_torn_last_line(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, run_id="r", template_name="t")
    a = journal.acquire_sync("file", {"path": "/a"}, "A")
    b = journal.acquire_sync("s3.multipart", {"bucket": "b", "key": "k"}, "B")
    c = journal.acquire_sync("qemu.vm", {"tag": "aib-vm-1"}, "C")
    journal.update_sync(b, {"uploadId": "u1"})
    journal.release_sync(a)
    journal.keep_sync(c, "kept")
    journal.phase("Distributing", "")
    with (tmp_path / JOURNAL_NAME).open("a") as f:
        f.write('{"op": "release", "id": "')  # the process died mid-write
    state = read_journal(tmp_path / JOURNAL_NAME)
    assert state.owner == Owner.current() and state.run_id == "r" and state.template_name == "t"
    assert [e.id for e in state.open_entries] == [b] and state.entries[b].data["uploadId"] == "u1"
    assert [e.id for e in state.kept_entries] == [c] and state.phase == "Distributing"
    assert oct((tmp_path / JOURNAL_NAME).stat().st_mode & 0o777) == "0o600"


async def test_gc_releases_a_dead_runs_resources_and_marks_it_failed(
    aib_home: Config, aib_plugins: PluginManager, tmp_path: Path
) -> None:
    run_dir, journal = await dead_run(aib_home)
    leftover = tmp_path / "outside" / "sockets"
    leftover.mkdir(parents=True)
    journal.acquire_sync("file", {"path": str(leftover)}, "QMP socket directory")
    released_file = tmp_path / "done.tmp"
    journal.release_sync(journal.acquire_sync("file", {"path": str(released_file)}, "cleaned up already"))
    released_file.write_text("not ours any more")  # a released entry is never touched again
    journal.acquire_sync("unknown.kind", {"x": 1}, "a resource of an uninstalled provider")
    (run_dir / "work" / "os-disk.qcow2").write_bytes(b"x")

    [dry] = await collect_garbage(aib_home, aib_plugins, dry_run=True)
    assert not dry.ok  # the unknown kind cannot be released
    assert "  would release file: QMP socket directory (path=" in "\n".join(dry.lines()) and leftover.exists()

    runs = await collect_garbage(aib_home, aib_plugins)
    assert [r.run_id for r in runs] == ["20260101T000000Z-abcdef"]
    run = runs[0]
    assert not leftover.exists() and released_file.exists() and not (run_dir / "work").exists()
    assert [r.ok for r in run.releases] == [False, True]
    assert "no installed provider releases it" in run.releases[0].detail
    record = json.loads((run_dir / "run.json").read_text())
    status = record["lastRunStatus"]
    assert status["runState"] == "Failed" and status["runSubState"] == "Customizing"
    assert "interrupted during Customizing (customize step 'install')" in status["message"]
    assert f"pid {run.pid}" in status["message"] and "1 could not be released" in status["message"]
    assert [e.kind for e in read_journal(run_dir / JOURNAL_NAME).open_entries] == ["unknown.kind"]
    assert (await list_runs(aib_home))[0].run_state == "Failed"


async def test_gc_never_touches_a_live_run(aib_home: Config, aib_plugins: PluginManager, tmp_path: Path) -> None:
    staging = await create_staging(aib_home, "alive", "cd" * 32, "20260101T000000Z-123456")
    journal = Journal.create(staging.run_directory, run_id=staging.run_id, template_name="alive")
    precious = tmp_path / "precious"
    precious.write_text("in use")
    journal.acquire_sync("file", {"path": str(precious)}, "in use")
    assert await collect_garbage(aib_home, aib_plugins) == []
    assert precious.exists() and staging.work.exists()
    [record] = await list_runs(aib_home)
    assert record.run_state == "Running" and record.last_run_status["startTime"]


async def test_releasers_come_from_plugins(aib_home: Config, aib_plugins: PluginManager) -> None:
    released: list[dict[str, Any]] = []

    class Plugin:
        @hookimpl
        def aib_register_releasers(self) -> list[tuple[str, Any]]:
            async def release(data: dict[str, Any], config: Config, options: BuildOptions) -> str:
                released.append(data)
                return f"aborted upload {data['uploadId']}"

            return [("test.upload", release)]

    aib_plugins.register(Plugin())
    _, journal = await dead_run(aib_home)
    journal.update_sync(journal.acquire_sync("test.upload", {"key": "k"}, "an upload"), {"uploadId": "u-1"})
    [run] = await collect_garbage(aib_home, aib_plugins)
    assert released == [{"key": "k", "uploadId": "u-1"}]
    assert run.ok and "aborted upload u-1" in "\n".join(run.lines())


async def test_a_finished_run_is_not_collected_and_journals_its_work_dir(
    aib_home: Config, aib_plugins: PluginManager, aib_fakes: FakePlugin
) -> None:
    opts = BuildOptions(config=aib_home, plugins=aib_plugins, build_host="fake")
    builder = Builder(fake_template(steps=1, targets=1, name="fine"), options=opts)
    result = await builder.run()
    assert result.run_state == "Succeeded"
    assert builder.staging is not None
    state = read_journal(builder.staging.run_directory / JOURNAL_NAME)
    assert state.owner == Owner.current() and not state.open_entries
    assert [e.what for e in state.entries.values()] == ["the run's work directory"]
    assert state.phase == "Distributing"
    assert await collect_garbage(aib_home, aib_plugins) == []


async def test_thirty_builds_of_one_template_at_once(
    aib_home: Config, aib_plugins: PluginManager, aib_fakes: FakePlugin
) -> None:
    template = fake_template(steps=2, targets=2, name="same")
    results = []

    async def one() -> None:
        opts = BuildOptions(config=aib_home, plugins=aib_plugins, build_host="fake")
        results.append(await Builder(template, options=opts).run())

    async with anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(one)
    assert [r.run_state for r in results] == ["Succeeded"] * 30, [r.last_run_status.message for r in results]
    assert len({r.run_id for r in results}) == 30
    outputs = {p.artifact.path for p in aib_fakes.world.publishes}
    assert len(outputs) == 30  # each run published its own captured disk
    runs = await list_runs(aib_home, "same")
    assert len(runs) == 30 and {r.run_state for r in runs} == {"Succeeded"}
    staging = runs[0].staging_directory
    assert (staging / "template.json").is_file() and not list(staging.glob(".template.json.*"))
    assert os.listdir(staging / "runs") and all(not (r.run_directory / "work").exists() for r in runs)


def test_aib_build_collects_dead_runs_first(
    aib_home: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aib_sdk.cli import main

    run_dir, journal = anyio.run(dead_run, aib_home)
    leftover = tmp_path / "leftover"
    leftover.write_text("x")
    journal.acquire_sync("file", {"path": str(leftover)}, "a temp file")
    template = tmp_path / "bad.json"
    template.write_text('{"source": {"type": "Nope"}}')
    assert main(["build", str(template)]) == 1  # the template is refused, after the gc
    err = capsys.readouterr().err
    assert "aib: gc: run 20260101T000000Z-abcdef (crashed): interrupted during Customizing" in err
    assert not leftover.exists() and (run_dir / "run.json").is_file()
    assert main(["runs", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["runState"] == "Failed" and row["endTime"]


KILLED_MID_LAYER = """
import os, signal, sys
from pathlib import Path
from aib_sdk.cache.store import LayerStore
from aib_sdk.journal import Journal
run_directory, layers, key = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
journal = Journal.create(run_directory, run_id=run_directory.name, template_name="crashed")
journal.phase("Customizing", "storing the layer of step 'install'")
store = LayerStore(layers)
temp = store.new_temp("qcow2")
journal.acquire_sync("file", {"path": str(temp.path)}, "step-cache layer being written")
temp.path.write_bytes(b"half a layer")
(store.data / f"{key}.qcow2").write_bytes(b"linked, but its record was never written")
os.kill(os.getpid(), signal.SIGKILL)
"""


async def test_a_build_killed_mid_layer_leaves_nothing_a_later_build_uses_and_gc_cleans_it(
    aib_home: Config, aib_plugins: PluginManager
) -> None:
    staging = await create_staging(aib_home, "crashed", "ab" * 32, "20260101T000000Z-abcdef")
    store = LayerStore(CacheSettings.from_config(aib_home).directory)
    key = "c" * 64
    proc = await anyio.run_process(
        [sys.executable, "-c", KILLED_MID_LAYER, str(staging.run_directory), str(store.root), key], check=False
    )
    assert proc.returncode == -9
    [half] = list(store.tmp.iterdir())
    assert half.read_bytes() == b"half a layer" and (store.data / f"{key}.qcow2").exists()
    assert store.get(key) is None and store.chain(key) is None  # a later build never boots it
    live = store.new_temp("qcow2")  # a live build's layer in progress is left alone
    [run] = await collect_garbage(aib_home, aib_plugins)
    assert any(r.kind == "file" and r.ok and str(half) in r.detail for r in run.releases), run.lines()
    assert [p.name for p in store.tmp.iterdir()] == [live.path.name]
    assert list(store.data.iterdir()) == []
    live.discard()
