"""File transfer over WinRM: chunked parallel upload with a guest-side sha256 check, and download."""

from __future__ import annotations

import hashlib
import os

import pytest

from aib_sdk.errors import CommunicatorError

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("size", [0, 1, 200_000, 1_000_003])
async def test_upload_is_byte_exact(winrm, winrm_server, tmp_path, size):
    data = os.urandom(size)
    local = tmp_path / "payload.bin"
    local.write_bytes(data)
    progress: list[int] = []
    await winrm.upload(local, "C:\\Windows\\Temp\\payload.bin", on_progress=lambda done, total: progress.append(done))
    assert winrm_server.files["c:\\windows\\temp\\payload.bin"] == data
    finish = [s for s in winrm_server.scripts() if s.startswith("# aib:upload-finish")]
    assert f"$sha256 = '{hashlib.sha256(data).hexdigest()}'" in finish[-1]
    assert [k for k in winrm_server.files if "aib-part" in k] == []  # parts were reassembled and removed
    if size:
        assert progress[-1] == size


async def test_upload_uses_envelope_sized_chunks_over_parallel_shells(winrm, winrm_server, tmp_path):
    data = os.urandom(12 * winrm.chunk_size + 10)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    await winrm.upload(local, "C:\\big.bin")
    parts = [c for c in winrm_server.calls if (c.script or "").startswith("# aib:upload-part")]
    assert len(parts) == 3 and len({c.shell_id for c in parts}) == 3
    assert sorted(len(c.stdin) for c in parts)[0] > 3 * winrm.chunk_size  # evenly split
    sends = [size for action, size in winrm_server.request_sizes if action == "Send"]
    assert all(size <= winrm.max_envelope_size for size in sends)
    assert max(sends) > winrm.max_envelope_size * 0.9  # chunks fill the envelope
    assert winrm_server.files["c:\\big.bin"] == data


async def test_small_upload_uses_one_shell(winrm, winrm_server, tmp_path):
    local = tmp_path / "small.bin"
    local.write_bytes(os.urandom(2 * winrm.chunk_size))
    await winrm.upload(local, "C:\\small.bin")
    assert sum(1 for c in winrm_server.calls if (c.script or "").startswith("# aib:upload-part")) == 1


async def test_corrupted_upload_fails_the_guest_check(winrm, winrm_server, tmp_path):
    local = tmp_path / "f.bin"
    local.write_bytes(b"important bytes" * 100)
    winrm_server.corrupt_uploads = True
    with pytest.raises(CommunicatorError, match="sha256"):
        await winrm.upload(local, "C:\\f.bin")
    assert "c:\\f.bin" not in winrm_server.files


@pytest.mark.parametrize("remote", ["relative\\path.txt", "C:\\Windows\\..\\evil.txt", 'C:\\a"b.txt'])
async def test_upload_rejects_bad_remote_paths(winrm, winrm_server, tmp_path, remote):
    local = tmp_path / "f.txt"
    local.write_text("x")
    with pytest.raises(CommunicatorError):
        await winrm.upload(local, remote)
    assert winrm_server.calls == []


async def test_download_round_trip(winrm, winrm_server, tmp_path):
    data = os.urandom(70_000)
    winrm_server.files["c:\\logs\\setup.log"] = data
    await winrm.download("C:\\Logs\\setup.log", tmp_path / "setup.log")
    assert (tmp_path / "setup.log").read_bytes() == data
    with pytest.raises(CommunicatorError):
        await winrm.download("C:\\missing.txt", tmp_path / "missing")


async def test_naive_upload_baseline_is_byte_exact(winrm, winrm_server, tmp_path):
    data = os.urandom(20_000)
    local = tmp_path / "n.bin"
    local.write_bytes(data)
    await winrm.upload_naive(local, "C:\\n.bin")
    assert winrm_server.files["c:\\n.bin"] == data
    assert sum(1 for c in winrm_server.calls if c.command_line.startswith("echo ")) == 4
