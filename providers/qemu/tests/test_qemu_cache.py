"""The step cache on the tiny guest: layers made by QMP snapshots of the running VM, booted again as a chain.

Every test reads the published disk itself (``debugfs``), so a stale layer would show as stale content.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from aib_provider_qemu import hooks as qemu_hooks
from aib_provider_qemu import process
from aib_sdk.builder import Builder
from aib_sdk.cache.store import LayerStore
from aib_sdk.cli import main as aib_main
from aib_sdk.config import Config
from aib_sdk.events import LogLine, StepFinished, WarningEvent
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.result import BuildResult
from aib_sdk.testing.fixtures_vm import read_ext4_file

pytestmark = [pytest.mark.vm, pytest.mark.anyio]


class Bench:
    """Runs tiny-guest builds sharing one AIB_HOME and one layer store; remembers each run's events."""

    def __init__(self, tmp_path: Path, tiny_guest_cache: Path) -> None:
        self.tmp = tmp_path
        self.layers = tmp_path / "layers"
        self.env = dict(
            os.environ,
            AIB_HOME=str(tmp_path / "home"),
            AIB_CACHE=str(tiny_guest_cache),
            AIB_CACHE_DIR=str(self.layers),
        )
        self.events: list[Any] = []
        self.runs = 0

    def template(self, source: dict[str, str], steps: list[dict[str, Any]]) -> dict[str, Any]:
        self.runs += 1
        out = self.tmp / f"out-{self.runs}.qcow2"
        return {
            "source": source,
            "customize": steps,
            "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": out.as_uri(), "format": "qcow2"}],
        }

    async def build(self, template: dict[str, Any], **options: Any) -> BuildResult:
        self.events = []
        opts = BuildOptions(
            config=Config({}, self.env),
            plugins=PluginManager(entry_points=False, plugins=[qemu_hooks]),
            build_host="qemu",
            on_event=self.events.append,
            timeout=900,
            template_name="cache-vm",
            base_directory=self.tmp,
            **options,
        )
        result = await Builder(template, options=opts).run()
        return result

    def cached(self) -> list[tuple[str, bool]]:
        return [(e.name, e.cached) for e in self.events if isinstance(e, StepFinished) and e.phase == "customize"]

    def cache_lines(self) -> list[str]:
        return [e.line for e in self.events if isinstance(e, LogLine) and e.source == "cache"]

    async def read(self, result: BuildResult, path: str) -> bytes:
        uri = result.run_outputs["disk"].artifact_uri
        assert uri is not None
        return await read_ext4_file(Path(uri.removeprefix("file://")), "qcow2", path, self.tmp)


def _tee(path: str, text: str) -> dict[str, Any]:
    return {"type": "Shell", "name": path.strip("/").replace("/", "-"), "inline": [f"echo {text} | sudo tee {path}"]}


@pytest.fixture
def bench(tmp_path: Path, tiny_guest_cache: Path) -> Bench:
    return Bench(tmp_path, tiny_guest_cache)


async def test_prefix_reuse_and_no_stale_layer(bench: Bench, tiny_guest_source: dict[str, str]) -> None:
    steps = [_tee("/one", "one"), _tee("/two", "two"), _tee("/three", "three")]
    cold = await bench.build(bench.template(tiny_guest_source, steps))
    assert cold.run_state == "Succeeded", cold.last_run_status.message
    assert bench.cached() == [("one", False), ("two", False), ("three", False)]
    assert len(list((bench.layers / "index").glob("*.json"))) == 3
    # Each layer is a qcow2 whose backing file is its parent layer (the first: the base link), nothing in work/.
    records = [json.loads(p.read_text()) for p in (bench.layers / "index").glob("*.json")]
    for record in records:
        layer = bench.layers / "data" / record["file"]
        info = json.loads((await anyio.run_process(["qemu-img", "info", "-U", "--output=json", str(layer)])).stdout)
        parent = bench.layers / "data" / f"{record['parent']}.qcow2" if record["parent"] else None
        assert info["backing-filename"] == str(parent or bench.layers / "bases" / record["base"])

    same = await bench.build(bench.template(tiny_guest_source, steps))
    assert same.run_state == "Succeeded", same.last_run_status.message
    assert bench.cached() == [("one", True), ("two", True), ("three", True)]
    assert await bench.read(same, "/three") == b"three\n"

    edited = await bench.build(bench.template(tiny_guest_source, [*steps[:2], _tee("/three", "THREE")]))
    assert edited.run_state == "Succeeded", edited.last_run_status.message
    assert bench.cached() == [("one", True), ("two", True), ("three", False)]
    assert await bench.read(edited, "/one") == b"one\n"
    assert await bench.read(edited, "/two") == b"two\n"
    assert await bench.read(edited, "/three") == b"THREE\n"
    # Deprovisioning is never cached: the build user's key is gone from every published disk.
    with pytest.raises(FileNotFoundError):
        await bench.read(edited, "/home/packer/.ssh/authorized_keys")


async def test_changed_bytes_behind_unchanged_uris_rerun_exactly_that_step(
    bench: Bench, tiny_guest_source: dict[str, str]
) -> None:
    script, data = bench.tmp / "setup.sh", bench.tmp / "app.conf"
    script.write_text("#!/bin/sh\necho script-v1 | sudo tee /script\n")
    data.write_text("conf-v1\n")
    steps: list[dict[str, Any]] = [
        {"type": "Shell", "name": "script", "scriptUri": "setup.sh"},
        {"type": "File", "name": "config", "sourceUri": "app.conf", "destination": "/tmp/app.conf"},
        {"type": "Shell", "name": "install", "inline": ["sudo cp /tmp/app.conf /app.conf"]},
    ]
    first = await bench.build(bench.template(tiny_guest_source, steps))
    assert first.run_state == "Succeeded", first.last_run_status.message

    script.write_text("#!/bin/sh\necho script-v2 | sudo tee /script\n")
    second = await bench.build(bench.template(tiny_guest_source, steps))
    assert second.run_state == "Succeeded", second.last_run_status.message
    assert bench.cached() == [("script", False), ("config", False), ("install", False)]
    assert await bench.read(second, "/script") == b"script-v2\n"

    data.write_text("conf-v2\n")
    third = await bench.build(bench.template(tiny_guest_source, steps))
    assert third.run_state == "Succeeded", third.last_run_status.message
    assert bench.cached() == [("script", True), ("config", False), ("install", False)]
    assert await bench.read(third, "/script") == b"script-v2\n"
    assert await bench.read(third, "/app.conf") == b"conf-v2\n"


async def test_concurrent_identical_builds_share_intact_layers(bench: Bench, tiny_guest_source: dict[str, str]) -> None:
    steps = [_tee("/one", "one"), _tee("/two", "two")]
    results: list[BuildResult] = []

    async def build() -> None:
        results.append(await bench.build(bench.template(tiny_guest_source, steps)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(build)
        tg.start_soon(build)
    assert [r.run_state for r in results] == ["Succeeded"] * 2, [r.last_run_status.message for r in results]
    assert len(list((bench.layers / "index").glob("*.json"))) == 2
    for layer in (bench.layers / "data").glob("*.qcow2"):
        check = await anyio.run_process(["qemu-img", "check", "-q", str(layer)], check=False)
        assert check.returncode == 0, check.stderr
    again = await bench.build(bench.template(tiny_guest_source, steps))
    assert bench.cached() == [("one", True), ("two", True)]
    assert await bench.read(again, "/two") == b"two\n"


CRASHING_BUILD = textwrap.dedent(
    """
    import json, os, sys, anyio
    from aib_provider_qemu import layers
    from aib_provider_qemu import hooks
    from aib_sdk.builder import Builder
    from aib_sdk.config import Config
    from aib_sdk.options import BuildOptions
    from aib_sdk.plugins.manager import PluginManager

    original, calls = layers.write_layer, []

    async def crash_midway(frozen, dest, backing, backing_format):
        calls.append(dest)
        if len(calls) == 2:  # the second layer: half of it written, then the process dies
            data = open(frozen, "rb").read()
            with open(dest, "r+b") as fh:
                fh.write(data[: len(data) // 2])
            os._exit(9)
        await original(frozen, dest, backing, backing_format)

    layers.write_layer = crash_midway
    template = json.loads(sys.argv[1])
    options = BuildOptions(config=Config({}, dict(os.environ)), build_host="qemu", timeout=600,
                           plugins=PluginManager(entry_points=False, plugins=[hooks]), template_name="cache-vm")
    anyio.run(Builder(template, options=options).run)
    """
)


async def test_a_build_that_crashes_mid_layer_leaves_nothing_a_later_build_uses(
    bench: Bench, tiny_guest_source: dict[str, str]
) -> None:
    steps = [_tee("/one", "one"), _tee("/two", "two"), _tee("/three", "three")]
    template = bench.template(tiny_guest_source, steps)
    proc = await anyio.run_process(
        [sys.executable, "-c", CRASHING_BUILD, json.dumps(template)], env=bench.env, check=False
    )
    assert proc.returncode == 9, proc.stderr.decode()
    # The crashed builder's QEMU is still running (it is daemonized): stop it as `aib gc` would.
    for pidfile in (bench.tmp / "home").rglob("qemu.pid"):
        pid = int(pidfile.read_text())
        process.send(pid, signal.SIGKILL)
        await process.wait_exit(pid, 10)
    assert len(list((bench.layers / "index").glob("*.json"))) == 1  # step one's layer only
    # The half layer (and the RAM state saved with it, whole but never published).
    assert sorted(p.suffix for p in (bench.layers / "tmp").iterdir()) == [".access", ".qcow2", ".ram"]
    assert all(p.stat().st_size > 0 for p in (bench.layers / "tmp").iterdir())

    result = await bench.build(template)
    assert result.run_state == "Succeeded", result.last_run_status.message
    assert bench.cached() == [("one", True), ("two", False), ("three", False)]
    assert await bench.read(result, "/two") == b"two\n" and await bench.read(result, "/three") == b"three\n"
    assert list((bench.layers / "tmp").iterdir()) == []  # swept once its writer was gone


async def test_resume_no_cache_ls_and_prune_from_the_cli(
    bench: Bench, tiny_guest_source: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in bench.env.items():
        if name.startswith("AIB_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(bench.tmp / "cfg"))
    file = bench.tmp / "cache-vm.json"
    steps: list[dict[str, Any]] = [_tee("/one", "one"), {"type": "Shell", "name": "two", "inline": ["exit 3"]}]
    file.write_text(json.dumps(bench.template(tiny_guest_source, steps)))

    def aib(*args: str) -> tuple[int, str, str]:
        code = aib_main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, _, _ = await anyio.to_thread.run_sync(lambda: aib("build", str(file), "--json", "--progress", "none"))
    assert code == 2
    steps[1] = _tee("/two", "two")
    file.write_text(json.dumps(bench.template(tiny_guest_source, steps)))
    code, out, err = await anyio.to_thread.run_sync(
        lambda: aib("build", str(file), "--resume", "--json", "--progress", "plain")
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {
        "runId", "templateName", "lastRunStatus", "runOutputs", "source", "stagingDirectory"
    }  # fmt: skip
    assert "<-- customize[0] one (Shell) cached (layer " in err and "<-- customize[1] two (Shell) ran, done in" in err
    assert "step 2 ('two') failed in that run" in err
    record = json.loads((Path(result["stagingDirectory"]) / "runs" / result["runId"] / "run.json").read_text())
    assert record["details"]["cache"]["cachedSteps"] == 1

    code, out, _ = await anyio.to_thread.run_sync(aib, "cache", "ls", "--json")
    layers = json.loads(out)
    assert code == 0 and sorted(layer["step"] for layer in layers) == ["one", "two"]
    assert all(layer["template"] == "cache-vm" and layer["size"] > 0 for layer in layers)
    assert all(layer["ramState"] for layer in layers)  # kept with each layer, counted in its size

    code, _, err = await anyio.to_thread.run_sync(lambda: aib("build", str(file), "--no-cache", "--progress", "plain"))
    assert code == 0 and "cached (layer" not in err
    code, out, _ = await anyio.to_thread.run_sync(aib, "cache", "prune", "--max-size", "0")
    assert code == 0 and "removed 2 layer(s)" in out
    assert list((bench.layers / "data").iterdir()) == []  # RAM state files too
    assert json.loads((await anyio.to_thread.run_sync(aib, "cache", "ls", "--json"))[1]) == []
    assert (await anyio.to_thread.run_sync(aib, "cache", "prune", "--older-than", "soon"))[0] == 1


async def test_a_step_that_reboots_is_cached_once_the_guest_is_back(
    bench: Bench, tiny_guest_source: dict[str, str]
) -> None:
    reboot = {
        "type": "Shell",
        "name": "reboot",
        "inline": ["echo before | sudo tee /before", "sudo reboot", "sleep 60"],
    }
    first = await bench.build(bench.template(tiny_guest_source, [reboot, _tee("/after", "one")]))
    assert first.run_state == "Succeeded", first.last_run_status.message
    assert any("restarted" in e.line for e in bench.events if isinstance(e, LogLine) and e.source == "reboot")
    second = await bench.build(bench.template(tiny_guest_source, [reboot, _tee("/after", "two")]))
    assert second.run_state == "Succeeded", second.last_run_status.message
    assert bench.cached() == [("reboot", True), ("after", False)]
    # RAM state is kept only for layers before a reboot: this rebuild booted the layer.
    assert "ramState" not in _ram_records(bench)["reboot"]["extra"] and _restored_steps(bench) == []
    assert await bench.read(second, "/before") == b"before\n" and await bench.read(second, "/after") == b"two\n"


# RAM state ---------------------------------------------------------------------------------------------------------

BOOT_ID = "/proc/sys/kernel/random/boot_id"


def _boot_id_step(name: str, text: str) -> dict[str, Any]:
    """A step that records its text and the guest's boot id in ``/<name>`` and ``/<name>-boot``."""
    return {
        "type": "Shell",
        "name": name,
        "inline": [f"echo {text} | sudo tee /{name}", f"sudo cp {BOOT_ID} /{name}-boot"],
    }


def _ram_records(bench: Bench) -> dict[str, dict[str, Any]]:
    records = [json.loads(p.read_text()) for p in (bench.layers / "index").glob("*.json")]
    return {record["step"]: record for record in records}


def _restored_steps(bench: Bench) -> list[str]:
    return [e.name for e in bench.events if isinstance(e, StepFinished) and e.ram_state]


def _warnings(bench: Bench) -> list[str]:
    return [e.message for e in bench.events if isinstance(e, WarningEvent)]


async def test_a_rebuild_resumes_the_ram_state_instead_of_booting(
    bench: Bench, tiny_guest_source: dict[str, str]
) -> None:
    steps = [_boot_id_step("one", "one"), _tee("/two", "two"), _boot_id_step("three", "three")]
    cold = await bench.build(bench.template(tiny_guest_source, steps))
    assert cold.run_state == "Succeeded", cold.last_run_status.message
    saved_boot = await bench.read(cold, "/one-boot")
    records = _ram_records(bench)
    for record in records.values():
        state = record["extra"]["ramState"]
        for name in (state["file"], state["access"]):
            assert (bench.layers / "data" / name).stat().st_mode & 0o777 == 0o600
        assert record["size"] > (bench.layers / "data" / record["file"]).stat().st_size  # RAM state counted
    client_key = json.loads((bench.layers / "data" / records["two"]["extra"]["ramState"]["access"]).read_text())
    secret = client_key["clientKey"].strip().splitlines()[1]

    edited = await bench.build(bench.template(tiny_guest_source, [*steps[:2], _boot_id_step("three", "THREE")]))
    assert edited.run_state == "Succeeded", edited.last_run_status.message
    assert bench.cached() == [("one", True), ("two", True), ("three", False)]
    assert _restored_steps(bench) == ["two"]
    assert any("RAM state of layer" in line and "restored" in line for line in bench.cache_lines())
    # No fresh boot: the changed step ran in the very boot that ran step one in the cold build.
    assert await bench.read(edited, "/three-boot") == saved_boot
    assert await bench.read(edited, "/three") == b"THREE\n" and await bench.read(edited, "/two") == b"two\n"
    assert _warnings(bench) == []
    # The access file's secrets never reach an event (nor, so, a log).
    assert not any(secret in e.model_dump_json() for e in bench.events)

    bench.env["AIB_CACHE_RAM_STATE"] = "false"
    booted = await bench.build(bench.template(tiny_guest_source, [*steps[:2], _boot_id_step("three", "3")]))
    assert booted.run_state == "Succeeded", booted.last_run_status.message
    assert bench.cached() == [("one", True), ("two", True), ("three", False)] and _restored_steps(bench) == []
    assert await bench.read(booted, "/three-boot") != saved_boot
    assert await bench.read(booted, "/three") == b"3\n"
    assert (
        "ramState" not in _ram_records(bench)["three"].get("extra", {})
        or _ram_records(bench)["three"]["run_id"] != booted.run_id
    )

    # Pruning removes a layer's RAM state with it.
    removed = LayerStore(bench.layers).prune(max_size=0)
    assert removed and list((bench.layers / "data").iterdir()) == []


async def test_a_damaged_or_foreign_ram_state_falls_back_to_booting(
    bench: Bench, tiny_guest_source: dict[str, str]
) -> None:
    steps = [_boot_id_step("one", "one"), _boot_id_step("two", "two")]
    cold = await bench.build(bench.template(tiny_guest_source, steps))
    assert cold.run_state == "Succeeded", cold.last_run_status.message
    saved_boot = await bench.read(cold, "/one-boot")
    state = bench.layers / "data" / _ram_records(bench)["one"]["extra"]["ramState"]["file"]

    # Another VM shape (more memory: not part of the layer key): the layer boots, with a warning.
    other = await bench.build(
        bench.template(tiny_guest_source, [steps[0], _boot_id_step("two", "memory")]),
        settings={"qemu": {"memory_mib": 384}},
    )
    assert other.run_state == "Succeeded", other.last_run_status.message
    assert bench.cached() == [("one", True), ("two", False)] and _restored_steps(bench) == []
    assert any("could not be resumed" in w and "shape" in w for w in _warnings(bench)), _warnings(bench)
    assert await bench.read(other, "/two-boot") != saved_boot and await bench.read(other, "/two") == b"memory\n"

    # A damaged state file: QEMU refuses it, the layer boots, with a warning.
    with open(state, "r+b") as fh:
        fh.seek(state.stat().st_size // 2)
        fh.write(b"\xff" * 65536)
        fh.truncate(state.stat().st_size * 3 // 4)
    damaged = await bench.build(bench.template(tiny_guest_source, [steps[0], _boot_id_step("two", "damaged")]))
    assert damaged.run_state == "Succeeded", damaged.last_run_status.message
    assert bench.cached() == [("one", True), ("two", False)] and _restored_steps(bench) == []
    assert any("could not be resumed" in w for w in _warnings(bench)), _warnings(bench)
    assert await bench.read(damaged, "/two-boot") != saved_boot and await bench.read(damaged, "/two") == b"damaged\n"
