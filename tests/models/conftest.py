"""Fixtures for the template-model tests: a plugin manager without entry points and a valid template."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aib_sdk.plugins.manager import PluginManager

TINY_SOURCE: dict[str, Any] = {
    "type": "PlatformImage",
    "publisher": "aib-sdk",
    "offer": "tiny-test-guest",
    "sku": "busybox",
    "version": "latest",
}

VALID_PROPERTIES: dict[str, Any] = {
    "source": TINY_SOURCE,
    "customize": [{"type": "Shell", "name": "hello", "inline": ["echo hello"]}],
    "distribute": [{"type": "DiskFile", "uri": "file:///tmp/out.qcow2", "runOutputName": "disk"}],
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pm() -> PluginManager:
    return PluginManager(entry_points=False)


@pytest.fixture
def props() -> dict[str, Any]:
    """A fresh copy of a small valid properties object, to break one rule at a time."""
    return copy.deepcopy(VALID_PROPERTIES)
