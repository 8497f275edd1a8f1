"""Helpers for crash tests: run ``aib build`` as a real subprocess, wait for a line on its stderr, then hurt it."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

AIB = Path(sys.executable).parent / "aib"


def environment(tmp_path: Path, cache: Path, home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(AIB_HOME=str(home or tmp_path / "home"), AIB_CACHE=str(cache), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    env.pop("AIB_CONFIG", None)
    return env


def qemu_processes(marker: Path) -> list[str]:
    """The QEMU command lines mentioning ``marker`` (a test's tmp_path)."""
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if str(marker) in line]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Seconds until ``predicate()`` held; raises AssertionError after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - started


@dataclass
class BuildProcess:
    """A running ``aib build``; its stderr lines are collected by a thread."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def wait_for(self, text: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            try:
                self.seen.append(self.lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"never saw {text!r}:\n" + "".join(self.seen[-40:]))
            if self.proc.poll() is not None and self.lines.empty():
                pytest.fail(f"aib exited with {self.proc.returncode} before {text!r}:\n" + "".join(self.seen[-40:]))

    def stderr(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)


def aib(
    tmp_path: Path, cache: Path, *args: str, timeout: float = 120, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``aib ARGS`` to completion in the test's environment."""
    return subprocess.run(
        [str(AIB), *args], capture_output=True, text=True, env=environment(tmp_path, cache, home), timeout=timeout
    )


def leftovers(run_directory: Path) -> list[str]:
    """What a finished (or collected) run still holds: its work directory, journal entries still open, files they
    name, and QEMU processes carrying their tags. Empty when nothing leaked."""
    from aib_sdk.journal import JOURNAL_NAME, read_journal

    found = []
    if (run_directory / "work").exists():
        found.append(
            f"work directory {run_directory / 'work'}: {sorted(p.name for p in (run_directory / 'work').iterdir())}"
        )
    state = read_journal(run_directory / JOURNAL_NAME)
    for entry in state.entries.values():
        if entry.state == "open":
            found.append(f"open journal entry {entry.kind}: {entry.what}")
        if entry.kind == "file" and Path(str(entry.data["path"])).exists():
            found.append(f"file {entry.data['path']}")
        if entry.kind == "qemu.vm":
            tag = str(entry.data["tag"])
            out = subprocess.run(["pgrep", "-f", f"-name {tag}"], capture_output=True, text=True, check=False)
            if out.stdout.strip():
                found.append(f"QEMU {tag} still running")
    return found
