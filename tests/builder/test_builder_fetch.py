"""The fetcher against a real HTTP server on 127.0.0.1, local files, --map-uri, checksums and retries."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aib_sdk.errors import ChecksumError, FetchError, UsageError
from aib_sdk.events import Progress
from aib_sdk.fetch import UriFetcher, content_name, redact_uri
from aib_sdk.options import BuildOptions
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.recorder import EventRecorder

pytestmark = pytest.mark.anyio

SCRIPT = b"#!/bin/sh\necho hello from the script\n" * 1000
SCRIPT_SHA = hashlib.sha256(SCRIPT).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hits: Counter[str]
    flaky: dict[str, int]

    def do_GET(self) -> None:
        self.hits[self.path.split("?")[0]] += 1
        path = self.path.split("?")[0]
        if path.startswith("/flaky/"):
            remaining = self.flaky.setdefault(path, int(path.rsplit("/", 1)[1]))
            if remaining > 0:
                self.flaky[path] = remaining - 1
                self.send_error(503)
                return
        if path.startswith(("/files/", "/flaky/")):
            self.send_response(200)
            self.send_header("Content-Length", str(len(SCRIPT)))
            self.end_headers()
            self.wfile.write(SCRIPT)
            return
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, Counter[str]]]:
    hits: Counter[str] = Counter()
    handler = type("Handler", (_Handler,), {"hits": hits, "flaky": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def _fetcher(tmp_path: Path, **kwargs: object) -> tuple[UriFetcher, EventRecorder]:
    recorder = EventRecorder()
    kwargs.setdefault("backoff", 0.01)
    return UriFetcher(tmp_path / "inputs", emit=recorder, **kwargs), recorder  # type: ignore[arg-type]


async def test_http_fetch_is_verified_cached_and_reported(tmp_path, http_server):
    base, hits = http_server
    fetcher, events = _fetcher(tmp_path)
    path = await fetcher.fetch(f"{base}/files/setup.sh", SCRIPT_SHA.upper())
    assert path == tmp_path / "inputs" / SCRIPT_SHA / "setup.sh"
    assert path.read_bytes() == SCRIPT
    progress = events.of_kind(Progress)
    assert progress[-1].task == "download" and progress[-1].done == progress[-1].total == len(SCRIPT)
    again = await fetcher.fetch(f"{base}/files/setup.sh", SCRIPT_SHA)
    assert again == path and hits["/files/setup.sh"] == 1  # served from the staging inputs
    assert not [p for p in (tmp_path / "inputs").iterdir() if p.name.startswith(".partial")]


async def test_checksum_mismatch_leaves_nothing(tmp_path, http_server):
    base, _ = http_server
    fetcher, _ = _fetcher(tmp_path)
    with pytest.raises(ChecksumError) as info:
        await fetcher.fetch(f"{base}/files/setup.sh", "0" * 64)
    assert info.value.expected == "0" * 64 and info.value.actual == SCRIPT_SHA
    assert list((tmp_path / "inputs").iterdir()) == []
    with pytest.raises(UsageError):
        await fetcher.fetch(f"{base}/files/setup.sh", "not-a-checksum")


async def test_transient_errors_are_retried(tmp_path, http_server):
    base, hits = http_server
    fetcher, _ = _fetcher(tmp_path, attempts=4)
    path = await fetcher.fetch(f"{base}/flaky/2")
    assert path.read_bytes() == SCRIPT and hits["/flaky/2"] == 3
    with pytest.raises(FetchError, match="after 2 attempts: HTTP 503"):
        await _fetcher(tmp_path, attempts=2)[0].fetch(f"{base}/flaky/9")
    assert hits["/flaky/9"] == 2


async def test_client_errors_are_not_retried(tmp_path, http_server):
    base, hits = http_server
    fetcher, _ = _fetcher(tmp_path, attempts=5)
    with pytest.raises(FetchError, match="HTTP 404"):
        await fetcher.fetch(f"{base}/missing.sh")
    assert hits["/missing.sh"] == 1


async def test_connection_refused_is_retried_then_fails(tmp_path, http_server):
    fetcher, _ = _fetcher(tmp_path, attempts=2)
    with pytest.raises(FetchError, match="after 2 attempts: ConnectError"):
        await fetcher.fetch("http://127.0.0.1:9/nothing.sh")


async def test_file_uris_and_relative_paths(tmp_path):
    scripts = tmp_path / "tpl" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "a.sh").write_bytes(SCRIPT)
    fetcher, events = _fetcher(tmp_path, base_directory=tmp_path / "tpl")
    by_uri = await fetcher.fetch((scripts / "a.sh").as_uri(), SCRIPT_SHA)
    by_path = await fetcher.fetch("scripts/a.sh")
    assert by_uri == by_path == tmp_path / "inputs" / SCRIPT_SHA / "a.sh"
    assert events.of_kind(Progress)[-1].done == len(SCRIPT)
    with pytest.raises(FetchError, match="no such file"):
        await fetcher.fetch("scripts/missing.sh")
    with pytest.raises(FetchError, match=r"\.\."):
        await fetcher.fetch("file:///tmp/../etc/passwd")
    with pytest.raises(FetchError, match="unsupported URI scheme"):
        await fetcher.fetch("ftp://127.0.0.1/x.sh")


async def test_map_uri_rewrites_and_still_verifies(tmp_path, http_server):
    base, hits = http_server
    local = tmp_path / "mirror"
    local.mkdir()
    (local / "install.sh").write_bytes(SCRIPT)
    github = "https://raw.githubusercontent.com/example/repo/main/"
    fetcher, _ = _fetcher(
        tmp_path, uri_map={github: local.as_uri() + "/", "https://example.invalid/": f"{base}/files/"}
    )
    path = await fetcher.fetch(github + "install.sh", SCRIPT_SHA)
    assert path.read_bytes() == SCRIPT
    via_http = await fetcher.fetch("https://example.invalid/x.sh", SCRIPT_SHA)
    assert via_http.read_bytes() == SCRIPT and hits["/files/x.sh"] == 1
    (local / "other.sh").write_bytes(b"tampered")
    with pytest.raises(ChecksumError):
        await fetcher.fetch(github + "other.sh", SCRIPT_SHA)


async def test_make_run_context_fetches_with_the_options_map(tmp_path, http_server):
    base, _ = http_server
    recorder = EventRecorder()
    options = BuildOptions(uri_map={"https://scripts.example/": f"{base}/files/"})
    ctx = make_run_context(tmp_path, emit=recorder, options=options, template_name="direct")
    path = await ctx.fetch("https://scripts.example/s.sh", SCRIPT_SHA)
    assert path.is_relative_to(ctx.staging.inputs)
    assert ctx.config.home == tmp_path / "home" and ctx.cache_dir.is_dir()
    assert ctx.staging.work.is_dir() and ctx.template_name == "direct"
    assert recorder.of_kind(Progress)


def test_names_refuse_traversal_and_uris_are_redacted():
    assert content_name("https://h/a/setup.sh?sig=x") == "setup.sh"
    assert content_name("https://h/") == "download"
    for bad in ("https://h/a/..", "https://h/a/%2e%2e", "https://h/a/%2E%2E"):
        with pytest.raises(FetchError):
            content_name(bad)
    shown = redact_uri("https://user:pw@acct.blob.core.windows.net/c/b.sh?sv=1&sig=SECRET")
    assert "SECRET" not in shown and "pw" not in shown and shown.startswith("https://acct.blob.core.windows.net/c/b.sh")
    with pytest.raises(UsageError):
        UriFetcher(Path("/tmp/x"), verify=False)


async def test_secrets_in_query_strings_stay_out_of_events_and_errors(tmp_path, http_server):
    base, _ = http_server
    fetcher, events = _fetcher(tmp_path)
    await fetcher.fetch(f"{base}/files/s.sh?sig=TOPSECRET")
    assert all("TOPSECRET" not in p.label for p in events.of_kind(Progress))
    with pytest.raises(FetchError) as info:
        await fetcher.fetch(f"{base}/missing?sig=TOPSECRET")
    assert "TOPSECRET" not in str(info.value)
