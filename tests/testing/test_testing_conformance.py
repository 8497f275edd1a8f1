"""The conformance suite, run against the core's own providers: the DiskFile distributor and the Shell step."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

from aib_sdk.artifacts import Artifact, RunOutput
from aib_sdk.bases import DistributorBase
from aib_sdk.context import RunContext
from aib_sdk.distributors.files import DiskFileDistributor, LocalVhdDistributor
from aib_sdk.models.specs import DistributorSpec
from aib_sdk.steps.linux import FileStep, ShellStep
from aib_sdk.testing.conformance import CustomizerConformance, DistributorConformance


def _files(where: Path) -> list[str]:
    return sorted(p.name for p in where.iterdir()) if where.is_dir() else []


class TestDiskFile(DistributorConformance):
    distributor = DiskFileDistributor

    def target(self, where: Path) -> dict[str, Any]:
        return {"type": "DiskFile", "uri": (where / "out.qcow2").as_uri(), "format": "qcow2", "runOutputName": "d"}

    def published(self, where: Path) -> list[str]:
        return _files(where)


class TestLocalVhd(DistributorConformance):
    distributor = LocalVhdDistributor

    def target(self, where: Path) -> dict[str, Any]:
        return {"type": "VHD", "uri": (where / "out.vhd").as_uri(), "runOutputName": "vhd"}

    def published(self, where: Path) -> list[str]:
        return _files(where)


class TestShell(CustomizerConformance):
    customizer = ShellStep

    def step(self, where: Path) -> dict[str, Any]:
        return {"type": "Shell", "name": "hello", "inline": ["echo hello"]}


class TestFile(CustomizerConformance):
    customizer = FileStep
    runs_commands = False  # it only uploads

    def step(self, where: Path) -> dict[str, Any]:
        where.mkdir(parents=True, exist_ok=True)
        (where / "motd").write_text("hello\n")
        return {"type": "File", "sourceUri": (where / "motd").as_uri(), "destination": "/tmp/motd"}


class SloppySpec(DistributorSpec):
    type: Literal["Sloppy"]
    path: str


class Sloppy(DistributorBase[SloppySpec]):
    """Writes straight to its final path, a piece at a time: a cancelled publish leaves half a file."""

    async def publish(self, artifact: Artifact, spec: SloppySpec, ctx: RunContext) -> RunOutput:
        path = anyio.Path(spec.path)
        await path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(50):
            await path.write_bytes((await path.read_bytes() if await path.exists() else b"") + b"x" * 1000)
            await anyio.sleep(0.002)
        return RunOutput(spec.run_output_name, artifact_uri=str(path))


class SloppyChecks(DistributorConformance):
    distributor = Sloppy

    def target(self, where: Path) -> dict[str, Any]:
        return {"type": "Sloppy", "path": str(where / "out.bin"), "runOutputName": "s"}

    def published(self, where: Path) -> list[str]:
        return _files(where)


@pytest.mark.anyio
async def test_the_suite_catches_a_publish_that_is_not_atomic(tmp_path: Path) -> None:
    checks = SloppyChecks()
    await checks.test_publish_returns_its_run_output(tmp_path / "ok")  # it does publish
    with pytest.raises(AssertionError, match=r"cancelled after .* left \['out.bin'\]"):
        await checks.test_a_cancelled_publish_leaves_nothing_visible(tmp_path / "cancel")
