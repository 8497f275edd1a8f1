"""Fixtures for the WinRM tests: a WinRM test server (not Windows) and a communicator pointed at it."""

from __future__ import annotations

import pytest

from aib_sdk.communicators.winrm import WinRMCommunicator
from aib_sdk.testing.winrm_server import WinRMTestServer

USER, PASSWORD = "packer", "S3cret-Pa55"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def winrm_server():
    async with WinRMTestServer(username=USER, password=PASSWORD) as server:
        yield server


@pytest.fixture
async def winrm(winrm_server):
    comm = WinRMCommunicator("127.0.0.1", winrm_server.port, username=USER, password=PASSWORD, operation_timeout=2.0)
    yield comm
    await comm.aclose()
