"""The parts of the Temporal engine that need no server: settings, the artifact store, routing, results, CLI
usage errors."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import sys
from pathlib import Path

import anyio
import pytest

from aib_sdk.artifact_store import ArtifactStore, DirectoryStore
from aib_sdk.cli import main
from aib_sdk.config import Config
from aib_sdk.engines.temporal import workflow
from aib_sdk.engines.temporal.activity import EventPump
from aib_sdk.engines.temporal.capabilities import Capabilities, activity_queue, build_needs
from aib_sdk.engines.temporal.client import result_from_json
from aib_sdk.engines.temporal.inputs import InputFile, fetch_input, local_path_of, upload_inputs
from aib_sdk.engines.temporal.request import options_from_request
from aib_sdk.engines.temporal.settings import TemporalSettings
from aib_sdk.errors import FetchError, UsageError
from aib_sdk.events import RunFinished
from aib_sdk.options import BuildOptions
from aib_sdk.result import BuildResult, LastRunStatus


def test_settings_from_config_and_flags() -> None:
    config = Config({"temporal": {"address": "cfg:7233", "namespace": "prod", "artifact_store": "/srv/aib"}}, env={})
    s = TemporalSettings.from_config(config)
    assert (s.address, s.namespace, s.task_queue, s.artifact_store, s.tls) == (
        "cfg:7233",
        "prod",
        "aib-builds",
        "/srv/aib",
        False,
    )
    s = TemporalSettings.from_config(config, address="flag:1", task_queue="q")
    assert (s.address, s.task_queue) == ("flag:1", "q")
    env = Config({}, env={"AIB_TEMPORAL_ADDRESS": "env:7233", "AIB_TEMPORAL_API_KEY": "k"})
    assert TemporalSettings.from_config(env).tls  # an API key means TLS
    with pytest.raises(UsageError, match="no Temporal address"):
        TemporalSettings.from_config(Config({}, env={}))
    with pytest.raises(UsageError, match="tls_cert and tls_key"):
        TemporalSettings.from_config(Config({"temporal": {"address": "a:1", "tls_cert": "c.pem"}}, env={}))


def test_store_round_trip_and_tamper_detection(tmp_path: Path) -> None:
    src = tmp_path / "script.sh"
    src.write_text("echo hi\n")
    store = ArtifactStore(DirectoryStore(str(tmp_path / "store")))

    async def go() -> None:
        digest, size = await store.put(src)
        assert digest == hashlib.sha256(b"echo hi\n").hexdigest() and size == 8
        assert await store.put(src) == (digest, size)  # content-addressed: uploaded once
        item = InputFile(src.as_uri(), digest, "script.sh", size)
        copy = await fetch_input(store, item, tmp_path / "worker")
        assert copy.read_text() == "echo hi\n" and copy.parent.name == digest
        copy.unlink()
        (tmp_path / "store" / "sha256" / digest).write_text("echo evil\n")  # tampered with in the store
        with pytest.raises(FetchError, match="does not match its digest"):
            await fetch_input(store, item, tmp_path / "worker")
        assert not (tmp_path / "worker" / digest / "script.sh").exists()
        with pytest.raises(FetchError, match="missing from the artifact store"):
            await fetch_input(store, InputFile("x", "0" * 64, "x", 1), tmp_path / "worker")

    anyio.run(go)


def test_which_inputs_are_local(tmp_path: Path) -> None:
    assert local_path_of("scripts/a.sh", {}, tmp_path) == tmp_path / "scripts" / "a.sh"
    assert local_path_of("https://x.invalid/a.sh", {}, tmp_path) is None
    mapped = local_path_of("https://x.invalid/repo/a.sh", {"https://x.invalid/repo/": "file:///srv/mirror/"}, None)
    assert mapped == Path("/srv/mirror/a.sh")

    async def no_store() -> None:
        (tmp_path / "a.sh").write_text("x")
        await upload_inputs(None, ["a.sh"], None, {}, tmp_path)

    with pytest.raises(UsageError, match="artifact_store"):
        anyio.run(no_store)


def test_worker_options_point_inputs_at_verified_copies(tmp_path: Path) -> None:
    request = {
        "runId": "20260101T000000Z-abcdef",
        "templateName": "t",
        "params": {"a": "b"},
        "source": {"type": "DiskImage", "uri": "file:///home/me/base.qcow2"},
        "uriMap": {"https://mirror.invalid/": "https://other.invalid/"},
        "inputs": [
            {"uri": "scripts/a.sh", "sha256": "a" * 64, "name": "a.sh", "size": 1},
            {
                "uri": "file:///home/me/base.qcow2",
                "sha256": "b" * 64,
                "name": "base.qcow2",
                "size": 2,
                "role": "source",
            },
        ],
    }
    local = {"a" * 64: tmp_path / "a.sh", "b" * 64: tmp_path / "base.qcow2"}
    options = options_from_request(request, local, BuildOptions())
    assert options.run_id == request["runId"] and options.params == {"a": "b"} and options.cache
    assert not options_from_request({**request, "cache": False}, local, BuildOptions()).cache
    assert (
        options.ram_state and not options_from_request({**request, "ramState": False}, local, BuildOptions()).ram_state
    )
    assert options.uri_map["scripts/a.sh"] == (tmp_path / "a.sh").as_uri()
    assert options.uri_map["https://mirror.invalid/"] == "https://other.invalid/"
    assert isinstance(options.source, dict) and options.source["uri"] == (tmp_path / "base.qcow2").as_uri()
    # A request cannot point the worker at its own files: local mappings are dropped, an unsent local source refused.
    sneaky = {**request, "uriMap": {"https://x.invalid/a.sh": "file:///etc/shadow", "b.sh": "/etc/passwd"}}
    assert options_from_request(sneaky, local, BuildOptions()).uri_map.keys() == {"scripts/a.sh"}
    with pytest.raises(UsageError, match="not sent"):
        options_from_request({**request, "inputs": request["inputs"][:1]}, local, BuildOptions())


def test_capability_queues_cover_exactly_the_servable_provider_sets() -> None:
    caps = Capabilities(
        providers=frozenset({"qemu", "gallery", "s3"}), host_providers=frozenset({"qemu"}), build_hosts=("qemu",)
    )
    queues = caps.queues("q")
    assert activity_queue("q", {"qemu"}) in queues
    assert activity_queue("q", {"qemu", "gallery", "s3"}) in queues
    assert activity_queue("q", {"gallery"}) not in queues  # no build host
    assert activity_queue("q", {"qemu", "azure"}) not in queues  # a provider it lacks
    assert len(queues) == 4


def test_build_needs_the_providers_of_its_plan(aib_plugins, aib_home) -> None:
    from aib_sdk.builder.plan import make_plan

    template = {
        "source": {"type": "FakeImage"},
        "customize": [{"type": "Shell", "name": "s", "inline": ["true"]}],
        "distribute": [{"type": "FakeTarget", "runOutputName": "o"}],
    }
    plan = anyio.run(make_plan, template, BuildOptions(plugins=aib_plugins, config=aib_home))
    assert build_needs(plan) == {aib_plugins.registry.owner[plan.source]}  # the core's Shell step is everywhere


def test_result_round_trips_through_json() -> None:
    from datetime import UTC, datetime

    from aib_sdk.artifacts import RunOutput

    result = BuildResult(
        run_id="r",
        template_name="t",
        last_run_status=LastRunStatus("PartiallySucceeded", "Distributing", "one failed", datetime.now(UTC)),
        run_outputs={"a": RunOutput("a", artifact_uri="file:///x"), "b": RunOutput("b", provisioning_state="Failed")},
        source_exact_version="1.0",
        staging_directory=Path("/s"),
    )
    again = result_from_json(json.loads(result.to_json()))
    assert again.to_dict() == result.to_dict()
    assert again.exit_code == 3


def test_cli_usage_errors(tmp_path: Path, aib_home, capsys, tiny_guest_source) -> None:
    assert main(["worker"]) == 1
    assert "no Temporal address" in capsys.readouterr().err
    assert main(["worker", "--temporal", "localhost:1", "--max-builds", "0"]) == 1
    assert main(["cancel", "r"]) == 1
    (tmp_path / "setup.sh").write_text("echo hi\n")
    template = tmp_path / "t.json"
    template.write_text(
        json.dumps(
            {
                "source": tiny_guest_source,
                "customize": [{"type": "Shell", "name": "s", "scriptUri": "setup.sh"}],
                "distribute": [{"type": "VHD", "runOutputName": "v"}],
            }
        )
    )
    capsys.readouterr()
    assert main(["build", str(template), "--temporal", "127.0.0.1:1"]) == 1
    assert "set [temporal] artifact_store" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"source": tiny_guest_source, "distribute": [{"type": "Nope"}]}))
    assert main(["build", str(bad), "--temporal", "127.0.0.1:1"]) == 1  # template errors surface before submitting


def test_workers_advertise_the_accelerator_their_build_hosts_probe(aib_plugins) -> None:
    """The accelerator comes from the build host's own probe (QEMU: KVM module, /dev/kvm and a test boot), not
    from /dev/kvm alone; a host without a probe advertises none."""
    from aib_provider_qemu import hooks as qemu_hooks
    from aib_sdk.engines.temporal.capabilities import probe_accelerator
    from aib_sdk.plugins.manager import PluginManager

    qemu = PluginManager(entry_points=False, plugins=[qemu_hooks])
    for setting in ("tcg", "kvm"):
        config = Config({"qemu": {"accel": setting}}, env={})
        assert anyio.run(probe_accelerator, qemu, config, ("qemu",)) == setting
    fake_hosts = tuple(aib_plugins.registry.build_hosts)
    assert anyio.run(probe_accelerator, aib_plugins, Config({}, env={}), fake_hosts) == "none"
    assert anyio.run(probe_accelerator, qemu, Config({}, env={}), ()) == "none"


class _Handle:
    """Records the signals an :class:`EventPump` sends (the workflow handle's one method it uses)."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, object]]] = []

    async def signal(self, name: str, batch: list[dict[str, object]]) -> None:
        self.batches.append(batch)


@pytest.mark.parametrize("how", ["stop", "cancel"])
def test_event_pump_ends_whenever_it_is_stopped(how: str) -> None:
    """The activity ends its event pump right after the run's last event woke it. The pump waited with
    ``asyncio.wait_for``, which on Python 3.11 swallows a cancel that lands once the awaited event is set: the pump
    kept running and heartbeating, and the finished build's activity never completed (a queue test hung). Every
    interleaving of that wake-up and the stop (or a cancel) must end the pump; a stop sends the last event first."""

    async def one(delay_steps: int) -> bool:
        handle = _Handle()
        pump = EventPump(handle, heartbeat_every=1e12)  # type: ignore[arg-type]
        task = asyncio.create_task(pump.run())
        await asyncio.sleep(0.01)  # the pump waits for events
        pump.sink(RunFinished(run_state="Succeeded", run_sub_state="Distributing", message=""))
        for _ in range(delay_steps):
            await asyncio.sleep(0)
        pump.stop() if how == "stop" else task.cancel()
        done, _ = await asyncio.wait([task], timeout=1.0)
        if not done:  # hung: end it for good so the loop can close
            task.cancel()
            await asyncio.wait([task], timeout=1.0)
            return False
        sent = [event["kind"] for batch in handle.batches for event in batch]
        return how == "cancel" or sent == ["run-finished"]

    async def every_interleaving() -> list[int]:
        return [steps for steps in range(8) if not await one(steps)]

    assert asyncio.run(every_interleaving()) == []


def test_workflow_module_imports_only_the_standard_library_and_temporalio() -> None:
    """Workflows run without temporalio's sandbox (it swaps ``sys.modules`` process-wide under the builds): what the
    sandbox checked, that the workflow code can only be deterministic, is held here by what it may import."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(Path(workflow.__file__).read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            imported.add((node.module or "").split(".")[0])
    assert imported, "no imports found: the check reads the wrong file"
    assert {m for m in imported if m not in sys.stdlib_module_names and m != "temporalio"} == set()
