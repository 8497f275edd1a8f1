"""The one verified, resumable download and the one local-path rule (both downloaders of the tree use them)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aib_provider_qemu.url_source import local_path as qemu_local_path
from aib_sdk.errors import ChecksumError, FetchError, SourceError
from aib_sdk.fetch import UriFetcher
from aib_sdk.runtime import RetryPolicy
from aib_sdk.runtime.download import download_verified, local_path
from aib_sdk.runtime.http import http_client

pytestmark = pytest.mark.anyio

BODY = os.urandom(600_000)
SHA = hashlib.sha256(BODY).hexdigest()
FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05)


@pytest.fixture
def server() -> Iterator[tuple[str, list[str | None], dict[str, int]]]:
    """Serves ``BODY`` with ranges; ``state["cuts"]`` answers cut short after 100 kB that many times."""
    ranges: list[str | None] = []
    state = {"cuts": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            ranges.append(rng)
            start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
            if start >= len(BODY):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
            payload = BODY[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if state["cuts"]:
                state["cuts"] -= 1
                self.wfile.write(payload[:100_000])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/image.raw", ranges, state
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_one_path_rule_for_every_downloader(tmp_path: Path) -> None:
    assert local_path("scripts/a.sh", tmp_path) == tmp_path / "scripts" / "a.sh"
    assert local_path("file:///srv/a.sh") == Path("/srv/a.sh")
    assert local_path("/srv/a.sh", tmp_path) == Path("/srv/a.sh")
    # a relative path may climb; the build context (aib_sdk.trust, before the run) says whether that is allowed
    assert local_path("../shared/a.sh", tmp_path / "tpl") == tmp_path / "tpl" / ".." / "shared" / "a.sh"
    assert qemu_local_path("images/../base.qcow2", tmp_path) == tmp_path / "images" / ".." / "base.qcow2"
    for bad, why in [
        ("/srv/../etc/passwd", "'..'"),
        ("file:///tmp/../etc/passwd", "'..'"),
        ("~/secrets", "'~'"),
        ("~root/.ssh/id_rsa", "'~'"),
        ("file://otherhost/x", "not a local file URI"),
        ("file:relative/x", "absolute"),
    ]:
        with pytest.raises(FetchError, match=why):
            local_path(bad, tmp_path)
        with pytest.raises(SourceError, match=why):  # the qemu DiskImage source applies the same rule
            qemu_local_path(bad, tmp_path)


async def test_the_fetcher_refuses_what_the_source_refuses(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    fetcher = UriFetcher(tmp_path / "inputs", base_directory=tmp_path / "tpl")
    for bad in ("/tmp/../outside.sh", "~/outside.sh"):
        with pytest.raises(FetchError):
            await fetcher.fetch(bad)


async def test_download_resumes_after_cuts_and_verifies(tmp_path: Path, server) -> None:
    url, ranges, state = server
    state["cuts"] = 2
    part = tmp_path / "image.part"
    notes: list[str] = []
    seen: list[tuple[int, int | None]] = []
    async with http_client(retry=False) as client:
        digest, size = await download_verified(
            client, url, part, SHA, policy=FAST, log=notes.append, progress=lambda d, t: seen.append((d, t))
        )
    assert (digest, size) == (SHA, len(BODY)) and part.read_bytes() == BODY
    assert ranges == [None, "bytes=100000-", "bytes=200000-"]
    assert sum("resuming at byte" in n for n in notes) == 2
    assert seen[-1] == (len(BODY), len(BODY))


async def test_a_whole_part_file_is_verified_without_a_body(tmp_path: Path, server) -> None:
    url, ranges, _ = server
    part = tmp_path / "image.part"
    part.write_bytes(BODY)
    async with http_client(retry=False) as client:
        assert await download_verified(client, url, part, SHA, policy=FAST) == (SHA, len(BODY))
    assert ranges == [f"bytes={len(BODY)}-"]


async def test_a_checksum_mismatch_removes_the_part(tmp_path: Path, server) -> None:
    url, _, _ = server
    part = tmp_path / "image.part"
    async with http_client(retry=False) as client:
        with pytest.raises(ChecksumError) as info:
            await download_verified(client, url, part, "ab" * 32, policy=FAST)
    assert info.value.actual == SHA and not part.exists()


async def test_too_many_cuts_give_up_with_the_reason(tmp_path: Path, server) -> None:
    url, ranges, state = server
    state["cuts"] = 10
    async with http_client(retry=False) as client:
        with pytest.raises(FetchError, match="after 4 attempts"):
            await download_verified(client, url, tmp_path / "p", SHA, policy=FAST)
    assert len(ranges) == 4
