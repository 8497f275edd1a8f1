"""The harness: command rules with chosen output, a rule never matched fails the test, the ``aib_build`` fixture
and the options override that reaches Builders created deep inside the code under test (here: the CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aib_sdk.artifacts import CommandResult
from aib_sdk.cli import main
from aib_sdk.events import LogLine, StepFinished
from aib_sdk.options import BuildOptions, override_options, with_overrides
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fakes import FakePlugin, FakeWorld, fake_template


def _template(*commands: str) -> dict[str, object]:
    template = fake_template(steps=0, name="harness")
    template["properties"]["customize"] = [{"type": "FakeStep", "name": "probe", "commands": list(commands)}]  # type: ignore[index]
    return template


@pytest.mark.anyio
async def test_command_rules_answer_with_chosen_output(aib_build, aib_fakes: FakePlugin, aib_events) -> None:
    world = aib_fakes.world
    world.on_command(r"^uname", stdout="Linux tiny 6.1\n")
    world.on_command(r"^cat /etc/os-release", callback=lambda cmd: CommandResult(0, 'ID="debian"\n'))
    result = await aib_build(_template("uname -a", "cat /etc/os-release"))
    assert result.run_state == "Succeeded"
    lines = [e.line for e in aib_events.of_kind(LogLine) if e.source == "probe"]
    assert "Linux tiny 6.1" in lines and 'ID="debian"' in lines
    assert [r.matched for r in world.command_rules] == [1, 1]


@pytest.mark.anyio
async def test_a_rule_with_an_exit_code_fails_the_step(aib_build, aib_fakes: FakePlugin, aib_events) -> None:
    aib_fakes.world.on_command("apt-get", stderr="E: Unable to locate package nope\n", exit_code=100)
    result = await aib_build(_template("apt-get install -y nope"))
    assert result.run_state == "Failed"
    [finished] = aib_events.of_kind(StepFinished)
    assert finished.exit_code == 100 and "Unable to locate package" in (finished.error or "")


def test_a_rule_never_matched_is_named() -> None:
    world = FakeWorld()
    world.on_command("never-run")
    world.on_command("optional", required=False)
    with pytest.raises(AssertionError, match=r"never matched by any command: \['never-run'\]"):
        world.check_rules()


def test_a_rule_never_matched_fails_the_test_at_teardown(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(
        "def test_sets_a_rule_and_runs_nothing(aib_fakes):\n    aib_fakes.world.on_command('systemctl restart')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_inner.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert "1 passed, 1 error" in done.stdout and "never matched by any command: ['systemctl restart']" in done.stdout


def test_override_reaches_a_builder_made_by_the_cli(
    tmp_path: Path, aib_plugins: PluginManager, aib_fakes: FakePlugin, aib_home, capsys
) -> None:
    path = tmp_path / "harness.json"
    path.write_text(json.dumps(_template("echo from the cli")))
    aib_fakes.world.on_command("from the cli", stdout="seen\n")
    with override_options(plugins=aib_plugins, build_host="fake"):
        code = main(["build", str(path), "--json", "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["lastRunStatus"]["runState"] == "Succeeded"
    assert with_overrides(BuildOptions()).build_host is None  # the override ended with the block
    with pytest.raises(TypeError, match="not BuildOptions fields: nope"), override_options(nope=1):
        pass
