"""The Shell step's wrapper records how its script ended, even when the session's server dies first.

Failure before: during a reboot, the shutdown kills the SSH server and the script in the same sweep; the wrapper
shell reaped the killed script and printed its status ("Terminated") to its stderr, the dead session's pipe, and
SIGPIPE killed it before its trap wrote ``shutdown``. The record stayed ``running`` and the step failed as a crash
(dash and busybox ash; about one reboot in 30 on the tiny guest). Each test runs the real wrapper under the
machine's own shells and under the tiny guest's busybox ash (its static binary read from the guest's disk), its
stdout and stderr a pipe whose reader is gone, as they are once the server died.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from aib_sdk.config import Config
from aib_sdk.steps.linux import wrapped
from aib_sdk.testing.fixtures_vm import read_ext4_file
from aib_sdk.testing.tiny_guest import ensure_tiny_guest

HOST_SHELLS = sorted({os.path.realpath(p) for name in ("sh", "dash", "bash") if (p := shutil.which(name))})
RECORD = ".aib-step-customize-0"


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny guest's own static busybox, read from its disk (the guest is built once and cached)."""
    work = tmp_path_factory.mktemp("busybox")

    async def read() -> bytes:
        guest = await ensure_tiny_guest(Config({}, dict(os.environ)).cache)
        return await read_ext4_file(guest.disk, "raw", "/bin/busybox", work)

    binary = work / "busybox"
    binary.write_bytes(anyio.run(read))
    binary.chmod(0o755)
    return str(binary)


@pytest.fixture(params=[*HOST_SHELLS, pytest.param("busybox", marks=pytest.mark.vm)])
def shell(request: pytest.FixtureRequest) -> list[str]:
    """The command line of a POSIX shell: each one on this machine, and the tiny guest's busybox ash."""
    if request.param == "busybox":
        return [request.getfixturevalue("busybox"), "sh"]
    return [request.param]


class Session:
    """The wrapper run as an SSH server would run it: a new session, stdout and stderr on one pipe."""

    def __init__(self, shell: list[str], home: Path, script: str) -> None:
        self.home = home
        path = home / "script.sh"
        path.write_text("#!/bin/sh -e\n" + script)
        read, write = os.pipe()
        self.process = subprocess.Popen(
            [*shell, "-c", wrapped(str(path), RECORD)],
            stdin=subprocess.DEVNULL,
            stdout=write,
            stderr=write,
            env={"HOME": str(home), "PATH": os.environ["PATH"]},
            start_new_session=True,
        )
        os.close(write)
        self.reader: int | None = read

    def read_until(self, marker: bytes) -> None:
        seen = b""
        while marker not in seen:
            chunk = os.read(self.read_fd, 4096)
            assert chunk, f"the session ended before {marker!r}: {seen!r}"
            seen += chunk

    def read_all(self) -> bytes:
        seen = b""
        while chunk := os.read(self.read_fd, 4096):
            seen += chunk
        return seen

    @property
    def read_fd(self) -> int:
        assert self.reader is not None
        return self.reader

    def server_dies(self) -> None:
        if self.reader is not None:
            os.close(self.reader)
            self.reader = None

    def script_pid(self) -> int:
        return int((self.home / "pid").read_text())

    def record(self) -> str:
        self.process.wait(timeout=10)
        return (self.home / RECORD).read_text().strip()

    def close(self) -> None:
        """Close the pipe and stop whatever the session left running (a failed assertion leaves ``sleep 30``)."""
        self.server_dies()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def sessions(tmp_path: Path, shell: list[str]) -> Iterator[list[Session]]:
    opened: list[Session] = []
    yield opened
    for session in opened:
        session.close()


def _start(sessions: list[Session], shell: list[str], home: Path, script: str) -> Session:
    session = Session(shell, home, script)
    sessions.append(session)
    return session


def test_a_killed_script_is_recorded_after_the_session_is_gone(
    tmp_path: Path, shell: list[str], sessions: list[Session]
) -> None:
    session = _start(sessions, shell, tmp_path, 'echo $$ > "$HOME"/pid\necho started\nsleep 30\n')
    session.read_until(b"started")
    session.server_dies()
    os.kill(session.script_pid(), signal.SIGTERM)
    assert session.record() == "exit 143"  # before: "running" (the wrapper died of SIGPIPE)


def test_a_shutdown_that_kills_the_server_and_the_script_at_once_is_recorded(
    tmp_path: Path, shell: list[str], sessions: list[Session]
) -> None:
    for _ in range(30):
        session = _start(sessions, shell, tmp_path, "echo started\nsleep 30\n")
        session.read_until(b"started")
        session.server_dies()
        os.killpg(session.process.pid, signal.SIGTERM)  # what the guest's shutdown does
        assert session.record() == "shutdown"


def test_the_script_keeps_the_sessions_stderr_and_its_exit_code(
    tmp_path: Path, shell: list[str], sessions: list[Session]
) -> None:
    session = _start(sessions, shell, tmp_path, "echo out\necho err >&2\nexit 3\n")
    assert session.read_all().split() == [b"out", b"err"]
    assert session.process.wait(timeout=10) == 3
    assert session.record() == "exit 3"


def test_a_script_that_cannot_be_made_executable_fails_with_chmods_message(tmp_path: Path, shell: list[str]) -> None:
    done = subprocess.run(
        [*shell, "-c", wrapped(str(tmp_path / "gone.sh"), RECORD)],
        capture_output=True,
        env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]},
        check=False,
    )
    assert done.returncode != 0 and b"gone.sh" in done.stderr
    assert (tmp_path / RECORD).read_text().strip() == f"exit {done.returncode}"


def test_a_home_the_record_cannot_be_written_to_shows_in_the_log(tmp_path: Path, shell: list[str]) -> None:
    done = subprocess.run(
        [*shell, "-c", wrapped(str(tmp_path / "gone.sh"), RECORD)],
        capture_output=True,
        env={"HOME": str(tmp_path / "no-such-home"), "PATH": os.environ["PATH"]},
        check=False,
    )
    assert b"no-such-home" in done.stderr
