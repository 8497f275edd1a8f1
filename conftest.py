"""Repository-wide pytest settings: async tests run on asyncio through anyio's plugin."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_step_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own step-cache directory (``AIB_CACHE_DIR``): the cache is on by default, and tests that
    share the tiny guest's ``AIB_CACHE`` must not reuse each other's layers."""
    monkeypatch.setenv("AIB_CACHE_DIR", str(tmp_path_factory.mktemp("step-cache")))
