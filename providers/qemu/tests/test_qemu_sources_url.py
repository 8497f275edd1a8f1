"""``DiskImage`` sources: downloads from a real HTTP server on 127.0.0.1 (resume, checksum, cache) and local files."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aib_provider_qemu.url_source import DiskImageSource, UrlDiskSource
from aib_sdk.artifacts import DiskImage
from aib_sdk.config import Config
from aib_sdk.errors import ChecksumError, FetchError, SourceError
from aib_sdk.events import LogLine, Progress
from aib_sdk.options import BuildOptions
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.recorder import EventRecorder

SIZE = 3 * (1 << 20) + 12345


@dataclass
class ImageServer:
    """A real HTTP/1.1 server on 127.0.0.1 serving byte ranges, able to cut a response short once."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    cut_after: int | None = None
    honour_range: bool = True
    fail_once: int | None = None
    port: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def _handler(state: ImageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/").split("?")[0]
            rng = self.headers.get("Range")
            state.requests.append((name, rng))
            body = state.files.get(name)
            if state.fail_once is not None:
                status, state.fail_once = state.fail_once, None
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            if rng and state.honour_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if state.cut_after is not None:
                cut, state.cut_after = state.cut_after, None
                self.wfile.write(payload[:cut])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    state = ImageServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def payload() -> bytes:
    return os.urandom(SIZE).replace(b"QFI", b"QFJ")


@pytest.fixture
def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@pytest.fixture
def served(image_server: ImageServer, payload: bytes, digest: str) -> DiskImageSource:
    """The spec of ``payload`` served as ``disk.raw``, with its checksum."""
    image_server.files["disk.raw"] = payload
    return _spec(uri=image_server.url("disk.raw"), format="raw", sha256Checksum=digest)


def _spec(**fields: object) -> DiskImageSource:
    return DiskImageSource.model_validate({"type": "DiskImage", **fields})


def _ctx(tmp_path: Path, events: EventRecorder, **options: object):
    env = dict(os.environ, AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(tmp_path / "cache"))
    config = Config({}, env)
    return make_run_context(tmp_path, config=config, emit=events, options=BuildOptions(config=config, **options))


async def _resolve(tmp_path: Path, spec: DiskImageSource, events: EventRecorder | None = None) -> DiskImage:
    return await UrlDiskSource().resolve(spec, _ctx(tmp_path, events or EventRecorder()))


@pytest.mark.anyio
async def test_download_is_verified_cached_by_digest_and_reports_progress(
    tmp_path: Path, image_server: ImageServer, payload: bytes, digest: str, served: DiskImageSource
) -> None:
    events = EventRecorder()
    spec = _spec(uri=served.uri, format="raw", sha256Checksum=digest.upper())  # checksums are case-insensitive

    image = await _resolve(tmp_path, spec, events)

    assert image.path == tmp_path / "cache" / "images" / digest
    assert image.path.read_bytes() == payload
    assert (image.format, image.sha256, image.access) == ("raw", digest, "cloud-init")
    progress = [e for e in events.of_kind(Progress) if e.task == "download"]
    assert progress and progress[-1].done == SIZE and progress[-1].total == SIZE
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    assert not list((tmp_path / "cache" / "images").glob("*.part"))

    # Second time: a cache hit, no request at all.
    requests = len(image_server.requests)
    again = await _resolve(tmp_path, spec)
    assert again.path == image.path
    assert len(image_server.requests) == requests


@pytest.mark.anyio
async def test_cut_connection_resumes_with_a_range_request(
    tmp_path: Path, image_server: ImageServer, payload: bytes, served: DiskImageSource
) -> None:
    image_server.cut_after = 1_500_000
    events = EventRecorder()

    image = await _resolve(tmp_path, served, events)

    assert image.path.read_bytes() == payload
    assert image_server.requests[0] == ("disk.raw", None)
    _name, rng = image_server.requests[1]
    offset = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
    assert 0 < offset <= 1_500_000
    assert any("resuming" in e.line for e in events.of_kind(LogLine))


@pytest.mark.anyio
async def test_part_file_of_an_interrupted_run_is_continued(
    tmp_path: Path, image_server: ImageServer, payload: bytes, digest: str, served: DiskImageSource
) -> None:
    images = tmp_path / "cache" / "images"
    images.mkdir(parents=True)
    (images / f"{digest}.part").write_bytes(payload[:2_000_000])

    image = await _resolve(tmp_path, served)

    assert image_server.requests == [("disk.raw", "bytes=2000000-")]
    assert hashlib.sha256(image.path.read_bytes()).hexdigest() == digest


@pytest.mark.anyio
async def test_server_without_range_support_restarts_cleanly(
    tmp_path: Path, image_server: ImageServer, payload: bytes, digest: str, served: DiskImageSource
) -> None:
    image_server.honour_range = False
    images = tmp_path / "cache" / "images"
    images.mkdir(parents=True)
    (images / f"{digest}.part").write_bytes(b"stale bytes from elsewhere")

    image = await _resolve(tmp_path, served)
    assert image.path.read_bytes() == payload


@pytest.mark.anyio
async def test_a_503_is_retried(
    tmp_path: Path, image_server: ImageServer, digest: str, served: DiskImageSource
) -> None:
    image_server.fail_once = 503
    image = await _resolve(tmp_path, served)
    assert image.sha256 == digest
    assert len(image_server.requests) == 2


@pytest.mark.anyio
async def test_checksum_mismatch_raises_and_leaves_nothing(
    tmp_path: Path, digest: str, served: DiskImageSource
) -> None:
    wrong = "ab" * 32
    with pytest.raises(ChecksumError) as info:
        await _resolve(tmp_path, _spec(uri=served.uri, format="raw", sha256Checksum=wrong))
    assert info.value.expected == wrong
    assert info.value.actual == digest
    left = [p.name for p in (tmp_path / "cache" / "images").iterdir() if not p.name.endswith(".lock")]
    assert left == []


@pytest.mark.anyio
async def test_missing_image_and_bad_scheme(tmp_path: Path, image_server: ImageServer) -> None:
    events = EventRecorder()
    with pytest.raises(FetchError, match="404") as info:
        await UrlDiskSource().resolve(_spec(uri=image_server.url("nope.qcow2?sig=s3cr3t")), _ctx(tmp_path, events))
    # A SAS token is a secret: neither the error nor any event shows it.
    assert "s3cr3t" not in str(info.value)
    assert not any("s3cr3t" in e.model_dump_json() for e in events.events)
    with pytest.raises(SourceError, match="scheme"):
        await _resolve(tmp_path, _spec(uri="ftp://127.0.0.1/x.qcow2"))


@pytest.mark.anyio
async def test_uri_map_redirects_a_download_and_it_is_still_verified(
    tmp_path: Path, image_server: ImageServer, payload: bytes, digest: str
) -> None:
    image_server.files["images/disk.raw"] = payload
    ctx = _ctx(tmp_path, EventRecorder(), uri_map={"https://images.example.test/": image_server.url("images/")})
    image = await UrlDiskSource().resolve(
        _spec(uri="https://images.example.test/disk.raw", format="raw", sha256Checksum=digest), ctx
    )
    assert image.sha256 == digest
    assert image_server.requests == [("images/disk.raw", None)]


def _qcow2(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path


@pytest.mark.anyio
async def test_local_file_is_used_in_place_and_verified(tmp_path: Path) -> None:
    disk = _qcow2(tmp_path / "base.qcow2")
    digest = hashlib.sha256(disk.read_bytes()).hexdigest()
    events = EventRecorder()
    image = await UrlDiskSource().resolve(
        _spec(uri=disk.as_uri(), sha256Checksum=digest, hyperVGeneration="V2", diskInterface="nvme"),
        _ctx(tmp_path, events),
    )
    assert (image.path, image.format, image.sha256) == (disk, "qcow2", digest)
    assert (image.hyper_v_generation, image.disk_interface) == ("V2", "nvme")
    assert any(e.task == "verify" and e.done == e.total for e in events.of_kind(Progress))

    with pytest.raises(ChecksumError):
        await _resolve(tmp_path, _spec(uri=disk.as_uri(), sha256Checksum="0" * 64))


@pytest.mark.anyio
async def test_local_paths_relative_to_the_template_and_no_traversal(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    _qcow2(tmp_path / "images" / "base.qcow2")
    ctx = _ctx(tmp_path, EventRecorder(), base_directory=tmp_path)
    image = await UrlDiskSource().resolve(_spec(uri="images/base.qcow2"), ctx)
    assert image.path == tmp_path / "images" / "base.qcow2"
    # A relative path may climb: the build context (aib_sdk.trust, checked when the run is planned) confines it.
    climbed = await UrlDiskSource().resolve(_spec(uri="images/../images/base.qcow2"), ctx)
    assert climbed.path.resolve() == image.path
    with pytest.raises(SourceError, match=r"\.\."):
        await UrlDiskSource().resolve(_spec(uri=f"file://{tmp_path}/images/../images/base.qcow2"), ctx)
    with pytest.raises(SourceError, match="not found"):
        await UrlDiskSource().resolve(_spec(uri="images/missing.qcow2"), ctx)


@pytest.mark.anyio
async def test_declared_format_must_match_the_content(tmp_path: Path) -> None:
    disk = _qcow2(tmp_path / "base.qcow2")
    ctx = _ctx(tmp_path, EventRecorder())
    with pytest.raises(SourceError, match="declared raw but holds a qcow2"):
        await UrlDiskSource().resolve(_spec(uri=str(disk), format="raw"), ctx)
    raw = tmp_path / "plain.img"
    raw.write_bytes(b"\0" * 4096)
    with pytest.raises(SourceError, match="declared qcow2 but is raw"):
        await UrlDiskSource().resolve(_spec(uri=str(raw), format="qcow2"), ctx)


@pytest.mark.anyio
async def test_kernel_boot_files_and_static_access(tmp_path: Path) -> None:
    disk = _qcow2(tmp_path / "base.qcow2")
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    ctx = _ctx(tmp_path, EventRecorder())
    image = await UrlDiskSource().resolve(
        _spec(uri=str(disk), kernel=(tmp_path / "vmlinuz").as_uri(), kernelArgs="root=/dev/vda", access="static"),
        ctx,
    )
    assert (image.kernel, image.kernel_args, image.access) == (tmp_path / "vmlinuz", "root=/dev/vda", "static")
    with pytest.raises(SourceError, match="initrd"):
        await UrlDiskSource().resolve(_spec(uri=str(disk), initrd=(tmp_path / "vmlinuz").as_uri()), ctx)


def test_spec_uses_aib_names_and_rejects_bad_checksums() -> None:
    spec = _spec(uri="file:///x.qcow2", sha256Checksum="A" * 64, osType="Windows", hyperVGeneration="V2")
    assert spec.sha256_checksum == "a" * 64
    assert spec.model_dump(exclude_none=True)["osType"] == "Windows"
    with pytest.raises(ValueError, match="64 hexadecimal"):
        _spec(uri="file:///x.qcow2", sha256Checksum="abc")
    with pytest.raises(ValueError):
        _spec(uri="file:///x.qcow2", os_type="Linux")
