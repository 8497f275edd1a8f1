"""``aib`` in-process (``main(argv)``) and as a subprocess: exit codes, output streams, runs/show/delete, plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from aib_sdk import staging
from aib_sdk.cli import main
from aib_sdk.config import Config
from aib_sdk.plugins import hookimpl

AIB = Path(sys.executable).parent / "aib"


@pytest.fixture
def aib_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("AIB_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.delenv("AIB_CONFIG", raising=False)
    return home


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("aib 0.")


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("validate", "build", "schema", "plugins", "runs", "show", "delete"):
        assert command in text


def test_usage_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 1
    assert "invalid choice" in capsys.readouterr().err
    assert main(["build"]) == 1
    assert "required: FILE" in capsys.readouterr().err
    assert main([]) == 1


def test_build_rejects_bad_values_before_building(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = tmp_path / "t.json"
    template.write_text("{}")
    assert main(["build", str(template), "--timeout", "5x"]) == 1
    assert "aib: error: --timeout expects a duration" in capsys.readouterr().err
    assert main(["build", str(template), "--param", "oops"]) == 1
    assert "--param expects NAME=VALUE" in capsys.readouterr().err
    assert main(["build", str(template), "--map-uri", "https://a/=file:///srv/../x/"]) == 1
    assert "--map-uri" in capsys.readouterr().err
    assert main(["build", str(template), "--source", str(tmp_path / "none.qcow2")]) == 1
    assert "no such disk file" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "missing.json")]) == 1
    captured = capsys.readouterr()
    assert "template file not found" in captured.err and captured.out == ""


def test_plugins_lists_core_types(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("aib-sdk")
    assert "distributor: " in text and "DiskFile" in text
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert "VHD" in listing["aib-sdk"]["types"]["distributor"]
    assert "Shell" in listing["aib-sdk"]["types"]["customizer"]


def test_plugins_respects_block_list(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import entry_points

    names = [ep.name for ep in entry_points(group="aib_sdk")]
    monkeypatch.setenv("AIB_DISABLE_PLUGINS", ",".join(names))
    assert main(["plugins", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["aib-sdk"]


async def _make_runs(home: Path) -> tuple[str, str]:
    config = Config({}, {"AIB_HOME": str(home)})
    first = await staging.create_staging(config, "web", "a" * 64, "20261125T100000Z-aaaaaa")
    await staging.write_record(
        first,
        {
            "runId": first.run_id,
            "templateName": "web",
            "lastRunStatus": {
                "runState": "Succeeded",
                "runSubState": "Distributing",
                "message": "",
                "startTime": "2026-11-25T10:00:00Z",
                "endTime": "2026-11-25T10:05:00Z",
            },
        },
    )
    await anyio.Path(first.log_file).write_text("line one\nline two\n")
    second = await staging.create_staging(config, "db", "b" * 64, "20261125T110000Z-bbbbbb")
    return first.run_id, second.run_id


def test_runs_show_delete(aib_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    web_run, db_run = anyio.run(_make_runs, aib_home)

    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["RUN", "ID", "TEMPLATE", "STATE", "START", "END"]
    assert lines[1].split()[:3] == [db_run, "db", "Unknown"]  # newest first; no record written
    assert lines[2].split() == [web_run, "web", "Succeeded", "2026-11-25T10:00:00Z", "2026-11-25T10:05:00Z"]

    assert main(["runs", "web", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["runId"] for r in rows] == [web_run]

    assert main(["show", web_run]) == 0
    shown = capsys.readouterr().out
    record = json.loads(shown[: shown.rindex("}") + 1])
    assert record["lastRunStatus"]["runState"] == "Succeeded"
    assert shown.rstrip().endswith("customization.log") and "log: " in shown

    assert main(["show", web_run, "--log"]) == 0
    assert capsys.readouterr().out == "line one\nline two\n"

    assert main(["show", "20990101T000000Z-cccccc"]) == 1
    assert "aib: error: no run" in capsys.readouterr().err
    assert main(["show", "../../etc"]) == 1
    assert "not a run id" in capsys.readouterr().err

    assert main(["delete", "web"]) == 0
    assert "removed " in capsys.readouterr().out
    assert not list((aib_home / "staging").glob("web-*"))
    assert main(["delete", "web"]) == 1
    assert "no staging directory" in capsys.readouterr().err


def test_runs_empty(aib_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no runs" in captured.err


def test_subprocess_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "AIB_HOME": str(tmp_path / "home")}
    proc = subprocess.run([str(AIB), "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("aib ")
    proc = subprocess.run(
        [str(AIB), "build", str(tmp_path / "nope.json"), "--timeout", "1h"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "template file not found" in proc.stderr
    proc = subprocess.run(
        [str(AIB), "show", "20990101T000000Z-cccccc"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


class GreeterPlugin:
    """A provider adding two ``aib`` subcommands through the ``aib_add_cli_commands`` hook."""

    @hookimpl
    def aib_add_cli_commands(self, subparsers) -> None:
        p = subparsers.add_parser("greet", help="say hello")
        p.add_argument("--name", required=True)

        async def greet(args) -> int:
            print(f"hello {args.name}")
            return 5

        p.set_defaults(func=greet)
        q = subparsers.add_parser("count", help="sync command")
        q.set_defaults(func=lambda args: print("sync") or 0)


def test_provider_subcommands(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from aib_sdk.cli import invocation
    from aib_sdk.plugins.manager import PluginManager

    monkeypatch.setattr(
        invocation, "new_plugin_manager", lambda: PluginManager(entry_points=False, plugins=[GreeterPlugin()])
    )
    assert main(["greet", "--name", "you"]) == 5
    assert capsys.readouterr().out == "hello you\n"
    assert main(["count"]) == 0
    assert capsys.readouterr().out == "sync\n"
    assert main(["greet"]) == 1  # argparse errors in provider commands exit 1 too
    assert "the following arguments are required: --name" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "greet" in capsys.readouterr().out
