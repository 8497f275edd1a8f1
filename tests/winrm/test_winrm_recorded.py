"""Replays WinRM replies recorded from real Windows (pypsrp's fixtures, see data/README.md) to the communicator.

The HTTP layer here is httpx's MockTransport acting as a replay test server: the point is that our parser reads
what Windows actually sends (ResourceCreated selectors, Running/Done command states, the OperationTimeout fault,
UTF-8 output), which the project's own WinRM test server cannot prove.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from aib_sdk.communicators.winrm import WinRMCommunicator
from aib_sdk.communicators.winrm import session as session_module

pytestmark = pytest.mark.anyio
DATA = Path(__file__).parent / "data"


def _action(xml: str) -> str:
    match = re.search(r"<(?:wsa|a):Action[^>]*>([^<]*)<", xml)
    assert match
    return match.group(1).rsplit("/", 1)[-1]


@pytest.fixture
def replay(monkeypatch):
    """Serve the recorded responses in order, matched by the request's action (skipping what we do not send)."""
    state: dict[str, object] = {"sent": []}

    def load(name: str) -> None:
        recorded = json.loads((DATA / f"{name}.json").read_text())["messages"]
        state["queue"] = [(_action(m["request"]), m["response"]) for m in recorded]

    async def handler(request: httpx.Request) -> httpx.Response:
        action = _action(request.content.decode())
        state["sent"].append(action)
        queue = state["queue"]
        while queue and queue[0][0] != action:
            queue.pop(0)  # e.g. pypsrp's Signal after completion, which we do not send
        assert queue, f"no recorded reply for {action}"
        _, body = queue.pop(0)
        status = 500 if "<s:Fault" in body else 200
        return httpx.Response(status, content=body.encode(), headers={"Content-Type": "application/soap+xml"})

    def new_client(self):
        return httpx.AsyncClient(transport=httpx.MockTransport(handler))

    monkeypatch.setattr(session_module.Session, "_new_client", new_client)
    state["load"] = load
    return state


def _comm() -> WinRMCommunicator:
    return WinRMCommunicator("192.0.2.1", 5986, username="vagrant", password="x", scheme="https", auth="basic")


async def test_recorded_stdout_stderr_and_exit_code(replay):
    replay["load"]("winrs_stderr_rc")
    lines: list[tuple[str, str]] = []
    result = await _comm().run(
        "cmd.exe /c echo out && echo err>&2 && exit 1", on_output=lambda s, x: lines.append((s, x))
    )
    assert result.exit_code == 1
    assert result.stdout == "out \r\n" and result.stderr == "err \r\n"
    assert lines == [("stdout", "out "), ("stderr", "err ")]
    assert replay["sent"] == ["Create", "Command", "Receive", "Delete"]


async def test_recorded_operation_timeout_faults_mean_poll_again(replay):
    replay["load"]("winrs_operation_timeout")
    result = await _comm().run("powershell.exe Write-Host hi; Start-Sleep 30; Write-Host hi again")
    assert result.exit_code == 0
    assert result.stdout == "hi\nhi again\n"
    assert replay["sent"] == ["Create", "Command", "Receive", "Receive", "Receive", "Receive", "Delete"]


async def test_recorded_unicode_output(replay):
    replay["load"]("winrs_unicode")
    result = await _comm().run("powershell.exe Write-Host こんにちは")
    assert result.stdout.strip() == "こんにちは"
