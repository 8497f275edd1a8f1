"""Repository-wide pytest settings: async tests run on asyncio through anyio's plugin."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_step_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own step-cache directory (``AIB_CACHE_DIR``): the cache is on by default, and tests that
    share the tiny guest's ``AIB_CACHE`` must not reuse each other's layers."""
    monkeypatch.setenv("AIB_CACHE_DIR", str(tmp_path_factory.mktemp("step-cache")))


@pytest.fixture
def sha256_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths ``aib_sdk.disks.sha256_file`` really read during the test (the real function still runs)."""
    from aib_sdk import disks

    reads: list[Path] = []
    real = disks.sha256_file

    async def counted(path: Path, on_progress: disks.ProgressHandler | None = None) -> str:
        reads.append(path)
        return await real(path, on_progress)

    monkeypatch.setattr(disks, "sha256_file", counted)
    return reads
