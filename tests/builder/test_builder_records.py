"""Events, customization.log, run.json, staging records, templates from files, third-party providers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import ClassVar, Literal

import anyio
import pytest
from pydantic import BaseModel

from aib_sdk.artifacts import Artifact, RunOutput
from aib_sdk.config import Config
from aib_sdk.context import RunContext, StepContext
from aib_sdk.errors import StepError, UsageError
from aib_sdk.eventlog import format_event, provisioner_name, write_log
from aib_sdk.events import (
    LogLine,
    PhaseChanged,
    Progress,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    TargetStatus,
)
from aib_sdk.models.specs import DistributorSpec, StepSpec
from aib_sdk.plugins import hookimpl
from aib_sdk.staging import RUN_ID_PATTERN, delete_staging, list_runs, load_run
from aib_sdk.testing.fakes import FakePlugin, fake_template
from aib_sdk.testing.recorder import EventRecorder

pytestmark = pytest.mark.anyio


async def test_event_order_and_content(run_build, aib_events: EventRecorder):
    template = fake_template(steps=0, targets=1, name="ev")
    template["properties"]["customize"] = [
        {"type": "FakeStep", "name": "greet", "commands": ["echo hello\\nworld"], "sleep": 0.05},
        {"type": "FakeStep", "name": "other", "commands": ["true"]},
    ]
    template["properties"]["distribute"] = [{"type": "FakeTarget", "runOutputName": "out", "regions": ["a", "b"]}]
    result, _ = await run_build(template)
    assert result.run_state == "Succeeded"
    events = aib_events.events
    assert isinstance(events[0], RunStarted) and events[0].run_id == result.run_id
    assert isinstance(events[-1], RunFinished) and events[-1].run_state == "Succeeded"
    times = [e.time for e in events]
    assert times == sorted(times)
    mine = [
        e
        for e in events
        if (isinstance(e, StepStarted | StepFinished) and e.phase == "customize")
        or (isinstance(e, LogLine) and e.source in ("greet", "other"))
    ]
    kinds = [e.kind for e in mine]
    assert kinds == ["step-started", "log", "log", "step-finished", "step-started", "log", "step-finished"]
    logs = aib_events.of_kind(LogLine)
    assert [(ln.source, ln.line) for ln in logs[:2]] == [("greet", "hello"), ("greet", "world")]
    started = [e for e in aib_events.of_kind(StepStarted) if e.phase == "customize"]
    finished = [e for e in aib_events.of_kind(StepFinished) if e.phase == "customize"]
    assert [(s.phase, s.index, s.name, s.type) for s in started] == [
        ("customize", 0, "greet", "FakeStep"),
        ("customize", 1, "other", "FakeStep"),
    ]
    assert finished[0].ok and finished[0].duration >= 0.05 and finished[1].duration < finished[0].duration
    # Steps happen inside Customizing; targets inside Distributing.
    phase_at = {e.run_sub_state: i for i, e in enumerate(events) if isinstance(e, PhaseChanged)}
    customizing, distributing = phase_at["Customizing"], phase_at["Distributing"]
    assert customizing < events.index(started[0]) < events.index(finished[1]) < distributing
    regions = {(t.region, t.state) for t in aib_events.of_kind(TargetStatus) if t.region}
    assert regions == {("a", "Running"), ("a", "Succeeded"), ("b", "Running"), ("b", "Succeeded")}
    final = [t for t in aib_events.of_kind(TargetStatus) if t.region is None]
    assert [t.state for t in final] == ["Running", "Succeeded"] and final[-1].artifact_id == "fake://out"
    progress = [p for p in aib_events.of_kind(Progress) if p.task == "replicate"]
    assert {p.region for p in progress} == {"a", "b"} and all(p.percent == 100.0 for p in progress)


async def test_events_stream_runs_alongside_and_ends(make_builder):
    builder = make_builder(fake_template(steps=3, targets=2, name="stream"))
    seen: list[str] = []

    async def consume() -> None:
        async for event in builder.events():
            seen.append(event.kind)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            result = await builder.run()
    assert result.run_state == "Succeeded"
    assert seen[0] == "run-started" and seen[-1] == "run-finished"
    assert seen.count("step-finished") == seen.count("step-started") == 4  # three steps and deprovisioning
    # A late subscriber gets the whole run replayed, then the end of the stream.
    late = [event.kind async for event in builder.events()]
    assert late == seen


async def test_customization_log_and_run_json(run_build, aib_fakes: FakePlugin):
    aib_fakes.world.fail_target("target-1", "disk full")
    template = fake_template(steps=0, targets=2, name="logs")
    template["properties"]["customize"] = [
        {"type": "FakeStep", "name": "first", "commands": ["echo alpha", "https://acct.blob.example/s.sh?sig=SECRET"]},
        {"type": "FakeStep", "name": "second", "commands": ["echo beta\\ngamma"]},
    ]
    result, builder = await run_build(template)
    assert result.run_state == "PartiallySucceeded"
    run_dir = builder.staging.run_directory
    assert run_dir.parent.parent == result.staging_directory
    assert RUN_ID_PATTERN.match(run_dir.name)
    assert result.staging_directory.name.startswith("logs-") and len(result.staging_directory.name) == len("logs-") + 8
    lines = (run_dir / "customization.log").read_text().splitlines()
    assert all(line[:4].isdigit() and line[23] == "Z" for line in lines)  # UTC timestamps
    text = "\n".join(lines)
    body = [line[25:] for line in lines]
    first = body.index("(telemetry) Starting provisioner fake-step")
    assert "    first: alpha" in body[first:]
    ends = [i for i, line in enumerate(body) if line == "(telemetry) ending fake-step"]
    assert len(ends) == 2 and body.index("    first: alpha") < ends[0] < body.index("    second: beta")
    assert body.index("(telemetry) Starting provisioner deprovision") > ends[1]
    assert "    second: gamma" in body
    assert "Run state: Running / Customizing" in text
    assert "distribute 'target-1' (FakeTarget): Failed: target-1: disk full" in text
    assert body[-1] == "(telemetry) Finalizing."
    record = json.loads((run_dir / "run.json").read_text())
    assert record["runId"] == result.run_id and record["templateName"] == "logs"
    assert record["lastRunStatus"]["runState"] == "PartiallySucceeded"
    assert record["runOutputs"]["target-0"] == {
        "artifactId": "fake://target-0",
        "artifactUri": "fake://local/target-0",
        "provisioningState": "Succeeded",
    }
    assert record["source"] == {"exactVersion": "1.2.3"}
    details = record["details"]
    assert [s["name"] for s in details["steps"]] == ["first", "second", "Deprovision"]
    assert all(isinstance(s["duration"], float) for s in details["steps"])
    assert list(details["phases"]) == ["Queued", "Building", "Customizing", "Distributing"]
    assert any("identity" in w for w in details["warnings"])  # the template's own warnings are kept
    assert record == {**result.to_dict(), "details": details}
    snapshot = json.loads((result.staging_directory / "template.json").read_text())
    assert [c["name"] for c in snapshot["customize"]] == ["first", "second"]
    assert "SECRET" not in json.dumps(snapshot)


async def test_runs_are_listed_loaded_and_deleted(run_build, aib_home: Config):
    first, _ = await run_build(fake_template(steps=0, name="alpha"))
    second, _ = await run_build(fake_template(steps=0, name="beta"))
    third, _ = await run_build(fake_template(steps=1, name="alpha"))  # another digest: another staging dir
    runs = await list_runs(aib_home)
    assert {r.run_id for r in runs} == {first.run_id, second.run_id, third.run_id}
    assert [r.run_id for r in runs] == sorted((r.run_id for r in runs), reverse=True)
    assert {r.run_id for r in await list_runs(aib_home, "alpha")} == {first.run_id, third.run_id}
    loaded = await load_run(aib_home, second.run_id)
    assert loaded.template_name == "beta" and loaded.run_state == "Succeeded"
    assert loaded.log_file.is_file()
    with pytest.raises(UsageError):
        await load_run(aib_home, "20990101T000000Z-abcdef")
    with pytest.raises(UsageError):
        await load_run(aib_home, "../../etc")
    removed = await delete_staging(aib_home, "alpha")
    assert len(removed) == 2 and not any(p.exists() for p in removed)
    assert [r.run_id for r in await list_runs(aib_home)] == [second.run_id]
    with pytest.raises(UsageError):
        await delete_staging(aib_home, "alpha")
    with pytest.raises(UsageError):
        await delete_staging(aib_home, "..")


# A third-party provider, registered through the fixture -----------------------------------------------------


class ScriptStepSpec(StepSpec):
    type: Literal["UploadScript"]
    script_uri: str
    sha256_checksum: str = ""


class UploadScript:
    """Fetches its script (relative paths against the template folder), uploads it and runs it."""

    type_name: ClassVar[str] = "UploadScript"
    spec_model: ClassVar[type[BaseModel]] = ScriptStepSpec
    validator_model: ClassVar[type[BaseModel] | None] = None

    async def run(self, spec: BaseModel, step: StepContext) -> None:
        assert isinstance(spec, ScriptStepSpec)
        local = await step.run.fetch(spec.script_uri, spec.sha256_checksum or None)
        await step.communicator.upload(local, "/tmp/script.sh")
        result = await step.communicator.run("sh /tmp/script.sh", on_output=step.on_output)
        if not result.ok:
            raise StepError(step.name, "script failed", exit_code=result.exit_code, log_tail=step.tail)


class FolderTargetSpec(DistributorSpec):
    type: Literal["Folder"]
    directory: str


class FolderDistributor:
    type_name: ClassVar[str] = "Folder"
    spec_model: ClassVar[type[BaseModel]] = FolderTargetSpec

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        return isinstance(spec, FolderTargetSpec)

    async def publish(self, artifact: Artifact, spec: BaseModel, ctx: RunContext) -> RunOutput:
        assert isinstance(spec, FolderTargetSpec)
        target = anyio.Path(spec.directory) / f"{ctx.template_name}.raw"
        await target.write_bytes(await anyio.Path(artifact.path).read_bytes())
        return RunOutput(spec.run_output_name, artifact_id=str(target), artifact_uri=target.as_uri())


class ThirdPartyPlugin:
    @hookimpl
    def aib_register_customizers(self) -> list[type]:
        return [UploadScript]

    @hookimpl
    def aib_register_distributors(self) -> list[type]:
        return [FolderDistributor]


async def test_third_party_provider_from_a_template_file(
    make_builder, aib_register, aib_fakes: FakePlugin, tmp_path: Path
):
    aib_register(ThirdPartyPlugin(), name="aib-provider-thirdparty")
    folder = tmp_path / "project"
    (folder / "scripts").mkdir(parents=True)
    script = b"echo provisioned\n"
    (folder / "scripts" / "setup.sh").write_bytes(script)
    out = tmp_path / "out"
    out.mkdir()
    template = {
        "source": {"type": "FakeImage"},
        "customize": [
            {
                "type": "UploadScript",
                "name": "setup",
                "scriptUri": "scripts/setup.sh",
                "sha256Checksum": hashlib.sha256(script).hexdigest(),
            }
        ],
        "distribute": [{"type": "Folder", "runOutputName": "folder", "directory": str(out)}],
    }
    file = folder / "my-image.json"
    file.write_text(json.dumps(template))
    builder = make_builder(str(file))
    result = await builder.run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    assert result.template_name == "my-image"  # no resource name: the file's stem
    uploads = aib_fakes.world.machine.fake_communicator.uploads
    assert [(remote, data) for _, remote, data in uploads] == [("/tmp/script.sh", script)]
    fetched = uploads[0][0]
    assert fetched.is_relative_to(result.staging_directory / "inputs")
    assert (out / "my-image.raw").read_bytes().startswith(b"fake disk")
    assert result.run_outputs["folder"].artifact_uri == (out / "my-image.raw").as_uri()


async def test_checksum_mismatch_fails_the_step_clearly(make_builder, aib_register, tmp_path: Path):
    aib_register(ThirdPartyPlugin())
    (tmp_path / "setup.sh").write_text("echo hi\n")
    template = fake_template(steps=0, name="sum")
    template["properties"]["customize"] = [
        {"type": "UploadScript", "name": "setup", "scriptUri": "setup.sh", "sha256Checksum": "ab" * 32}
    ]
    result = await make_builder(template, base_directory=tmp_path).run()
    assert result.run_state == "Failed"
    message = result.last_run_status.message
    assert "'setup'" in message and "sha256 mismatch" in message and "ab" * 32 in message


async def test_an_unwritable_log_never_breaks_the_run(tmp_path: Path):
    send, receive = anyio.create_memory_object_stream[object](10)
    send.send_nowait(RunStarted(run_id="r", template_name="t", staging_directory="/x"))
    send.close()
    with anyio.fail_after(5):
        await write_log(receive, tmp_path)  # a directory: cannot be opened as a file
    assert list(tmp_path.iterdir()) == []


def test_log_lines_for_a_failed_step():
    event = StepFinished(
        phase="customize",
        index=2,
        name="install",
        type="WindowsRestart",
        ok=False,
        duration=1.5,
        exit_code=7,
        error="step 'install' failed\nlast log lines:\n  boom",
    )
    assert format_event(event) == [
        "==> customize[2] 'install' failed after 1.50s, exit code 7",
        "    step 'install' failed",
        "    last log lines:",
        "      boom",
        "(telemetry) ending windows-restart",
    ]
    assert provisioner_name("Shell") == "shell" and provisioner_name("FakeStep") == "fake-step"
