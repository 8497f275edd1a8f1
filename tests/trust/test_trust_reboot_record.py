"""The Shell step's wrapper records how its script ended, even when the session's server dies first.

Failure before: during a reboot, the shutdown kills the SSH server and the script in the same sweep; the wrapper
shell reaped the killed script and printed its status ("Terminated") to its stderr, the dead session's pipe, and
SIGPIPE killed it before its trap wrote ``shutdown``. The record stayed ``running`` and the step failed as a crash
(dash and busybox ash; about one reboot in 30 on the tiny guest). Each test runs the real wrapper under the
machine's own shells, its stdout and stderr a pipe whose reader is gone, as they are once the server died.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from aib_sdk.steps.linux import wrapped

SHELLS = sorted({os.path.realpath(p) for name in ("sh", "dash", "bash") if (p := shutil.which(name))})
RECORD = ".aib-step-customize-0"


class Session:
    """The wrapper run as an SSH server would run it: a new session, stdout and stderr on one pipe."""

    def __init__(self, shell: str, home: Path, script: str) -> None:
        self.home = home
        path = home / "script.sh"
        path.write_text("#!/bin/sh -e\n" + script)
        read, write = os.pipe()
        self.process = subprocess.Popen(
            [shell, "-c", wrapped(str(path), RECORD)],
            stdin=subprocess.DEVNULL,
            stdout=write,
            stderr=write,
            env={"HOME": str(home), "PATH": os.environ["PATH"]},
            start_new_session=True,
        )
        os.close(write)
        self.reader = read

    def read_until(self, marker: bytes) -> bytes:
        seen = b""
        while marker not in seen:
            chunk = os.read(self.reader, 4096)
            assert chunk, f"the session ended before {marker!r}: {seen!r}"
            seen += chunk
        return seen

    def read_all(self) -> bytes:
        seen = b""
        while chunk := os.read(self.reader, 4096):
            seen += chunk
        return seen

    def server_dies(self) -> None:
        os.close(self.reader)

    def script_pid(self) -> int:
        return int((self.home / "pid").read_text())

    def record(self) -> str:
        assert self.process.wait(timeout=10) is not None
        return (self.home / RECORD).read_text().strip()


@pytest.mark.parametrize("shell", SHELLS)
def test_a_killed_script_is_recorded_after_the_session_is_gone(tmp_path: Path, shell: str) -> None:
    session = Session(shell, tmp_path, 'echo $$ > "$HOME"/pid\necho started\nsleep 30\n')
    session.read_until(b"started")
    session.server_dies()
    os.kill(session.script_pid(), signal.SIGTERM)
    assert session.record() == "exit 143"  # before: "running" (the wrapper died of SIGPIPE)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_shutdown_that_kills_the_server_and_the_script_at_once_is_recorded(tmp_path: Path, shell: str) -> None:
    for _ in range(30):
        session = Session(shell, tmp_path, "echo started\nsleep 30\n")
        session.read_until(b"started")
        session.server_dies()
        os.killpg(session.process.pid, signal.SIGTERM)  # what the guest's shutdown does
        assert session.record() == "shutdown"


@pytest.mark.parametrize("shell", SHELLS)
def test_the_script_keeps_the_sessions_stderr_and_its_exit_code(tmp_path: Path, shell: str) -> None:
    session = Session(shell, tmp_path, "echo out\necho err >&2\nexit 3\n")
    assert session.read_all().split() == [b"out", b"err"]
    assert session.process.wait(timeout=10) == 3
    assert session.record() == "exit 3"


@pytest.mark.parametrize("shell", SHELLS)
def test_a_script_that_cannot_be_made_executable_fails_with_chmods_message(tmp_path: Path, shell: str) -> None:
    missing = tmp_path / "gone.sh"
    done = subprocess.run(
        [shell, "-c", wrapped(str(missing), RECORD)],
        capture_output=True,
        env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]},
        check=False,
    )
    assert done.returncode != 0 and b"gone.sh" in done.stderr
    assert (tmp_path / RECORD).read_text().strip() == f"exit {done.returncode}"
