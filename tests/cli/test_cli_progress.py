"""The build progress displays (plain lines and rich live view) fed with real event objects."""

from __future__ import annotations

import io

from aib_sdk.cli.progress import PlainDisplay, RichDisplay, make_display
from aib_sdk.events import (
    LogLine,
    PhaseChanged,
    Progress,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    TargetStatus,
    WarningEvent,
)

EVENTS = [
    RunStarted(run_id="20261125T120000Z-abcdef", template_name="web", staging_directory="/s/web-1"),
    PhaseChanged(run_state="Running", run_sub_state="Customizing"),
    StepStarted(phase="customize", index=0, name="apt", type="Shell"),
    LogLine(source="apt", line="Setting up nginx"),
    StepFinished(
        phase="customize",
        index=0,
        name="apt",
        type="Shell",
        ok=False,
        duration=1.5,
        exit_code=100,
        error="step 'apt' failed\nlast log lines:\n  E: x",
    ),
    *[
        Progress(task="upload", label="a.vhd", done=d, total=100, target="vhd", region="eastus")
        for d in (0, 10, 20, 30, 60, 99, 100)
    ],
    TargetStatus(run_output_name="vhd", type="VHD", state="Succeeded", artifact_uri="s3://b/a.vhd"),
    WarningEvent(message="identity ignored"),
    RunFinished(run_state="Failed", run_sub_state="Customizing", message="customization failed\nmore"),
]


def test_plain_display_lines() -> None:
    stream = io.StringIO()
    display = PlainDisplay(stream)
    for ev in EVENTS:
        display(ev)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "==> run 20261125T120000Z-abcdef of web (staging: /s/web-1)"
    assert "==> Running: Customizing" in lines
    assert "--> customize[0] apt (Shell)" in lines
    assert "    apt: Setting up nginx" in lines
    assert "<-- customize[0] apt (Shell) FAILED after 1.5s (exit code 100): step 'apt' failed" in lines
    progress = [line for line in lines if "upload a.vhd" in line]
    # One line per quarter reached, not one per event.
    assert [p.split(": ")[1].split("%")[0] for p in progress] == ["0", "25", "50", "75", "100"]
    assert progress[0].startswith("    upload a.vhd [vhd/eastus]")
    assert "==> target vhd (VHD): Succeeded s3://b/a.vhd" in lines
    assert "warning: identity ignored" in lines
    assert lines[-1] == "==> run Failed: customization failed"


def test_rich_display_renders_without_a_terminal() -> None:
    stream = io.StringIO()
    with RichDisplay(stream) as display:
        for ev in EVENTS:
            display(ev)
        assert display.phase == "Failed"
        assert display.bars.tasks[0].completed == 100
    text = stream.getvalue()
    assert "✗ customize[0] apt (Shell) 1.5s exit code 100" in text
    assert "✓ target vhd: Succeeded s3://b/a.vhd" in text
    assert "warning: identity ignored" in text


def test_make_display_modes() -> None:
    stream = io.StringIO()
    assert make_display(stream, "none") is None
    assert isinstance(make_display(stream, "auto"), PlainDisplay)  # not a terminal
    assert isinstance(make_display(stream, "plain"), PlainDisplay)
    assert isinstance(make_display(stream, "rich"), RichDisplay)


def test_progress_counted_in_steps_is_not_shown_as_bytes() -> None:
    steps = [Progress(task="debian-bootstrap", label="Debian 12", done=d, total=4, unit="steps") for d in range(5)]
    stream = io.StringIO()
    display = PlainDisplay(stream)
    for ev in steps:
        display(ev)
    lines = stream.getvalue().splitlines()
    assert lines[1] == "    debian-bootstrap Debian 12: 1 of 4 steps done"
    assert not any(" B" in line for line in lines)
    with RichDisplay(io.StringIO()) as rich:
        rich(steps[1])
        assert rich.bars.tasks[0].fields["amount"] == "1/4 steps"
        rich(Progress(task="upload", label="a.vhd", done=1536, total=4096))
        assert rich.bars.tasks[1].fields["amount"] == "1.5 KiB/4.0 KiB"


def test_cached_steps_say_whether_their_ram_state_was_restored() -> None:
    stream = io.StringIO()
    display = PlainDisplay(stream)
    common = {"phase": "customize", "type": "Shell", "ok": True, "duration": 0.0, "cached": True}
    display(StepFinished(index=0, name="one", layer="3fa1c2d4e5f6", **common))
    display(StepFinished(index=1, name="two", layer="0123456789ab", ram_state=True, **common))
    assert stream.getvalue().splitlines() == [
        "<-- customize[0] one (Shell) cached (layer 3fa1c2d4e5f6)",
        "<-- customize[1] two (Shell) cached (layer 0123456789ab, RAM state restored)",
    ]
