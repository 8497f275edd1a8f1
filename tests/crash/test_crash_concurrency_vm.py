"""Real QEMU: a cancellation landing while QEMU is still starting never orphans it, and four builds of the same
template at once (one process, one AIB_HOME) all succeed with their own runs and outputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from aib_provider_qemu import child as qemu_child
from aib_provider_qemu import process
from aib_provider_qemu.host import QemuBuildHost
from aib_provider_qemu.tiny_source import TinyGuestSource
from aib_sdk.artifacts import DiskImage
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.journal import JOURNAL_NAME, read_journal
from aib_sdk.models.specs import PlatformImageSource
from aib_sdk.options import BuildOptions
from aib_sdk.protocols import VmRequest
from aib_sdk.testing.crash import leftovers, qemu_processes
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.tiny_guest import SPEC

pytestmark = [pytest.mark.vm, pytest.mark.anyio, pytest.mark.timeout(600)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def image(tiny_guest_cache: Path) -> DiskImage:
    ctx = make_run_context(Path("/tmp"), config=Config({}, {**os.environ, "AIB_CACHE": str(tiny_guest_cache)}))
    return await TinyGuestSource().resolve(PlatformImageSource.model_validate(SPEC), ctx)


@pytest.mark.parametrize("delay", [0.0, 0.2])
async def test_cancel_while_qemu_starts_never_orphans_it(
    tmp_path: Path, image: DiskImage, delay: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled at the first await after the spawn (0.0), or while QEMU sets up and QMP is not answering (0.2)."""
    ctx = make_run_context(tmp_path)
    spawned: list[qemu_child.QemuChild] = []
    real_spawn = qemu_child.spawn
    with anyio.CancelScope() as scope:

        def spawn(*args: Any, **kwargs: Any) -> qemu_child.QemuChild:
            started = real_spawn(*args, **kwargs)
            spawned.append(started)
            if delay == 0:
                scope.cancel()
            else:
                scope.deadline = anyio.current_time() + delay
            return started

        monkeypatch.setattr(qemu_child, "spawn", spawn)
        async with QemuBuildHost().start(image, VmRequest(), ctx):
            pytest.fail("the machine should never be handed over")
    assert scope.cancelled_caught and len(spawned) == 1
    assert await process.wait_exit(spawned[0].pid, 10)
    assert not qemu_child.tagged_pids(spawned[0].tag) and not qemu_processes(tmp_path)
    assert list(ctx.staging.work.iterdir()) == []
    assert not Path(f"/tmp/aib-qemu-{spawned[0].tag.removeprefix('aib-')}").exists()


async def test_four_builds_of_one_template_at_once(
    tmp_path: Path, tiny_guest_source: dict[str, str], tiny_guest_cache: Path
) -> None:
    env = {**os.environ, "AIB_HOME": str(tmp_path / "home"), "AIB_CACHE": str(tiny_guest_cache)}
    env.pop("AIB_CONFIG", None)
    template = {
        "source": tiny_guest_source,
        "customize": [{"type": "Shell", "name": "mark", "inline": ["echo built | sudo tee /etc/mark"]}],
        "distribute": [{"type": "VHD", "runOutputName": "vhd"}],
    }
    results = []

    async def one() -> None:
        builder = Builder(template, options=BuildOptions(config=Config({}, env)))
        results.append(await builder.run())

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
    assert [r.run_state for r in results] == ["Succeeded"] * 4, [r.last_run_status.message for r in results]
    assert len({r.run_id for r in results}) == 4
    outputs = {r.run_outputs["vhd"].artifact_uri for r in results}
    assert len(outputs) == 4 and all(Path(str(u).removeprefix("file://")).is_file() for u in outputs)
    for result in results:
        run_dir = Path(str(result.staging_directory)) / "runs" / result.run_id
        assert leftovers(run_dir) == [] and not read_journal(run_dir / JOURNAL_NAME).open_entries
    assert not qemu_processes(tmp_path)
