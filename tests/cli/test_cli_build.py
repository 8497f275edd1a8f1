"""``aib build`` in-process with the real Builder, the core's file distributors and real qemu-img.

The source, build host, step and ``FakeTarget`` come from :mod:`aib_sdk.testing.fakes` (test servers standing in
for a VM: the CLI's behaviour, not a guest, is under test here).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aib_sdk.artifacts import RunOutput
from aib_sdk.cli import invocation, main
from aib_sdk.cli.build import report
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.result import BuildResult, LastRunStatus
from aib_sdk.testing.fakes import FakePlugin, fake_plugin, fake_template

JSON_KEYS = {"runId", "templateName", "lastRunStatus", "runOutputs", "source", "stagingDirectory"}


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePlugin:
    """The CLI's plugin manager gets the fake plugin (no entry points); state goes under tmp_path."""
    plugin = fake_plugin()
    monkeypatch.setattr(invocation, "new_plugin_manager", lambda: PluginManager(entry_points=False, plugins=[plugin]))
    monkeypatch.setenv("AIB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.delenv("AIB_CONFIG", raising=False)
    return plugin


def write(tmp_path: Path, doc: dict[str, object], name: str = "web.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_build_json_succeeded_with_file_targets(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    out_qcow2 = tmp_path / "out" / "image.qcow2"
    doc = fake_template(steps=2, targets=1)
    doc["distribute"] += [  # type: ignore[operator]
        {
            "type": "DiskFile",
            "runOutputName": "disk",
            "uri": out_qcow2.as_uri(),
            "format": "qcow2",
            "compression": "zstd",
        },
        {"type": "VHD", "runOutputName": "vhd"},
    ]
    template = write(tmp_path, doc)
    code = main(["build", str(template), "--json", "--progress", "plain", "--timeout", "2m"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout holds exactly one JSON object
    assert code == 0, captured.err
    assert set(result) == JSON_KEYS
    assert result["templateName"] == "web"
    assert result["lastRunStatus"]["runState"] == "Succeeded"
    assert set(result["lastRunStatus"]) == {"runState", "runSubState", "message", "startTime", "endTime"}
    assert result["source"] == {"exactVersion": "1.2.3"}
    outputs = result["runOutputs"]
    assert set(outputs) == {"target-0", "disk", "vhd"}
    assert outputs["disk"] == {"artifactId": None, "artifactUri": out_qcow2.as_uri(), "provisioningState": "Succeeded"}
    assert out_qcow2.read_bytes()[:4] == b"QFI\xfb"
    vhd = Path(outputs["vhd"]["artifactUri"].removeprefix("file://"))
    assert vhd.name == "vhd.vhd" and vhd.stat().st_size % (1024 * 1024) == 512
    # The plain display went to stderr, one line per event.
    assert "==> run " in captured.err and "--> customize[" in captured.err and "target disk" in captured.err


def test_build_failure_exit_2_names_step_and_log(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    fakes.world.fail_command("step 1", exit_code=7, output="E: broken package")
    template = write(tmp_path, fake_template(steps=2))
    code = main(["build", str(template), "--progress", "none"])
    captured = capsys.readouterr()
    assert code == 2
    assert "Failed" in captured.out
    assert "step-1" in captured.err and "7" in captured.err
    log_line = next(line for line in captured.err.splitlines() if line.startswith("aib: log: "))
    log = Path(log_line.removeprefix("aib: log: "))
    assert log.name == "customization.log" and log.is_file()


def test_build_partially_succeeded_exit_3(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    fakes.world.fail_target("target-1", "quota exceeded")
    template = write(tmp_path, fake_template(targets=2))
    code = main(["build", str(template), "--json", "--progress", "none"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert code == 3
    assert result["lastRunStatus"]["runState"] == "PartiallySucceeded"
    assert result["runOutputs"]["target-1"]["provisioningState"] == "Failed"
    assert "quota exceeded" in captured.err


def test_build_template_errors_exit_1(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    doc = fake_template()
    doc["customize"][0]["bogusField"] = 1  # type: ignore[index]
    template = write(tmp_path, doc)
    assert main(["build", str(template), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{template}:customize[0].bogusField" in captured.err


def test_build_missing_params_exit_1(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    doc = fake_template()
    doc["distribute"][0]["runOutputName"] = "<outName>"  # type: ignore[index]
    template = write(tmp_path, doc)
    assert main(["build", str(template)]) == 1
    assert "outName" in capsys.readouterr().err
    assert main(["build", str(template), "--param", "outName=web", "--json", "--progress", "none"]) == 0
    assert "web" in json.loads(capsys.readouterr().out)["runOutputs"]


def test_build_ctrl_c_cancels_cleanly_exit_130(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    doc = fake_template()
    doc["customize"][0]["sleep"] = 60  # type: ignore[index]
    template = write(tmp_path, doc)

    def interrupt() -> None:
        deadline = time.monotonic() + 30
        while not fakes.world.machines and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt)
    thread.start()
    started = time.monotonic()
    code = main(["build", str(template), "--json", "--progress", "none"])
    thread.join()
    captured = capsys.readouterr()
    assert code == 130
    assert time.monotonic() - started < 20
    assert "cancelling the build" in captured.err
    result = json.loads(captured.out)
    assert result["lastRunStatus"]["runState"] == "Canceled"
    assert fakes.world.machine.destroyed  # cleanup ran


def _result(state: str, outputs: dict[str, RunOutput] | None = None, message: str = "") -> BuildResult:
    return BuildResult(
        run_id="20261125T120000Z-abcdef",
        template_name="web",
        last_run_status=LastRunStatus(
            run_state=state,  # type: ignore[arg-type]
            run_sub_state="Distributing",
            message=message,
            start_time=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
            end_time=datetime(2026, 11, 25, 12, 5, tzinfo=UTC),
        ),
        run_outputs=outputs or {},
        source_exact_version="1.2.3",
        staging_directory=Path("/nonexistent/staging/web-12345678"),
    )


@pytest.mark.parametrize(
    ("state", "code"), [("Succeeded", 0), ("Failed", 2), ("PartiallySucceeded", 3), ("Canceled", 130)]
)
def test_report_exit_codes_and_json(state: str, code: int, capsys) -> None:
    outputs = {
        "a": RunOutput("a", artifact_uri="file:///srv/a.vhd"),
        "b": RunOutput("b", provisioning_state="Failed", error="boom"),
    }
    assert report(_result(state, outputs, message="why"), as_json=True) == code
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data == {
        "runId": "20261125T120000Z-abcdef",
        "templateName": "web",
        "lastRunStatus": {
            "runState": state,
            "runSubState": "Distributing",
            "message": "why",
            "startTime": "2026-11-25T12:00:00Z",
            "endTime": "2026-11-25T12:05:00Z",
        },
        "runOutputs": {
            "a": {"artifactId": None, "artifactUri": "file:///srv/a.vhd", "provisioningState": "Succeeded"},
            "b": {"artifactId": None, "artifactUri": None, "provisioningState": "Failed"},
        },
        "source": {"exactVersion": "1.2.3"},
        "stagingDirectory": "/nonexistent/staging/web-12345678",
    }
    if state == "Succeeded":
        assert captured.err == ""
    else:
        assert "why" in captured.err and "target b: boom" in captured.err
        assert "aib: log: /nonexistent/staging/web-12345678/runs/20261125T120000Z-abcdef/customization.log" in (
            captured.err
        )


def test_build_map_uri_fetches_from_local_folder(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    import hashlib

    scripts = tmp_path / "scripts"
    scripts.mkdir()
    body = b"#!/bin/sh\necho mapped script\n"
    (scripts / "setup.sh").write_bytes(body)
    doc = fake_template(steps=0)
    doc["customize"] = [
        {
            "type": "Shell",
            "name": "setup",
            "scriptUri": "https://scripts.invalid/repo/setup.sh",
            "sha256Checksum": hashlib.sha256(body).hexdigest(),
        }
    ]
    template = write(tmp_path, doc)
    mapping = f"https://scripts.invalid/repo/={scripts.as_uri()}/"
    assert main(["build", str(template), "--map-uri", mapping, "--json", "--progress", "none"]) == 0, (
        capsys.readouterr().err
    )
    uploads = fakes.world.machine.fake_communicator.uploads
    assert any(content == body for _, _, content in uploads)
    # A wrong checksum is still caught through the mapping.
    doc["customize"][0]["sha256Checksum"] = "0" * 64
    template = write(tmp_path, doc)
    assert main(["build", str(template), "--map-uri", mapping, "--json", "--progress", "none"]) == 2
    assert "sha256" in capsys.readouterr().err


def test_build_source_override(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    template = write(tmp_path, fake_template())
    code = main(
        ["build", str(template), "--source", '{"type": "FakeImage", "version": "9.9"}', "--json", "--progress", "none"]
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["source"] == {"exactVersion": "9.9"}
    assert fakes.world.resolved[-1].exact_version == "9.9"
