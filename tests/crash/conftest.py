"""Crash tests: the ``start_build`` fixture (see :mod:`aib_sdk.testing.crash`)."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aib_sdk.testing.crash import AIB, BuildProcess, environment


@pytest.fixture
def start_build(tmp_path: Path, tiny_guest_cache: Path) -> Iterator[Callable[..., BuildProcess]]:
    """``start_build(template_dict, *extra_args)`` → a running ``aib build --progress plain`` of it."""
    started: list[BuildProcess] = []

    def start(template: dict[str, Any], *extra: str, home: Path | None = None) -> BuildProcess:
        path = tmp_path / f"template-{len(started)}.json"
        path.write_text(json.dumps(template))
        proc = subprocess.Popen(
            [str(AIB), "build", str(path), "--progress", "plain", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(tmp_path, tiny_guest_cache, home),
        )
        build = BuildProcess(proc)
        stream = proc.stderr
        assert stream is not None

        def read() -> None:
            for line in stream:
                build.lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        started.append(build)
        return build

    yield start
    for build in started:
        if build.proc.poll() is None:
            build.proc.kill()
            build.proc.wait()
