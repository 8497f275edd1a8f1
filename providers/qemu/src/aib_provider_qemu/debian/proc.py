"""Subprocesses of the Debian builder: run through anyio, each output line logged, failures with their tail."""

from __future__ import annotations

import subprocess
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream

from aib_sdk.errors import SourceError

LineSink = Callable[[str], None]


async def run_logged(
    argv: Sequence[str | Path],
    log: LineSink,
    *,
    what: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run ``argv`` with stdout and stderr merged into ``log`` line by line; raise :class:`SourceError` on failure.

    On cancellation the process gets SIGTERM (so debootstrap's own traps can unmount what it mounted), then
    SIGKILL after five seconds.
    """
    cmd = [str(a) for a in argv]
    label = what or Path(cmd[0]).name
    tail: deque[str] = deque(maxlen=15)
    try:
        process = await anyio.open_process(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
    except OSError as exc:
        raise SourceError(f"{label}: cannot start {cmd[0]}: {exc}") from exc
    try:
        assert process.stdout is not None
        buffer = ""
        async for text in TextReceiveStream(process.stdout, errors="replace"):
            buffer += text
            *lines, buffer = buffer.split("\n")
            for line in lines:
                line = line.rstrip("\r")
                if line:
                    tail.append(line)
                    log(line)
        if buffer.strip():
            tail.append(buffer)
            log(buffer)
        code = await process.wait()
    except BaseException:
        await _terminate(process)
        raise
    finally:
        await process.aclose()
    if code != 0:
        last = "\n".join(f"  {line}" for line in tail)
        raise SourceError(f"{label} failed with exit code {code}; last output:\n{last}")


async def _terminate(process: anyio.abc.Process) -> None:
    # Deliberately unbounded: SIGTERM gets 5 s, then SIGKILL, whose wait always ends (no process left behind).
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def output_of(argv: Sequence[str | Path]) -> str:
    """The stdout of a short command; :class:`SourceError` with its stderr on failure."""
    cmd = [str(a) for a in argv]
    result = await anyio.run_process(cmd, check=False)
    if result.returncode != 0:
        err = result.stderr.decode(errors="replace").strip()
        raise SourceError(f"{' '.join(cmd[:2])} failed ({result.returncode}): {err}")
    return result.stdout.decode(errors="replace")
