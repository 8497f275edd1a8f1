"""Parsing of ``aib build`` option values: --param, --timeout, --map-uri and --source (real qemu-img for probing)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from aib_sdk.cli.args import parse_map_uri, parse_params, parse_timeout
from aib_sdk.errors import UsageError
from aib_sdk.source_spec import parse_source


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1.5h", 5400), (" 2M ", 120), ("0.5", 0.5)],
)
def test_timeout_values(text: str, seconds: float) -> None:
    assert parse_timeout(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "0", "0s", "-5", "1h30", "5m5m", "m", "1 h"])
def test_timeout_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="--timeout"):
        parse_timeout(text)


def test_params() -> None:
    assert parse_params(["a=1", "b=x=y", "a=2", "empty="]) == {"a": "2", "b": "x=y", "empty": ""}
    for bad in ("novalue", "=v"):
        with pytest.raises(UsageError, match="--param expects NAME=VALUE"):
            parse_params([bad])


def test_map_uri() -> None:
    got = parse_map_uri(
        [
            "https://raw.githubusercontent.com/org/repo/main/=file:///srv/scripts/",
            "https://x.test/get?a=b=/srv/other",
            "https://y.test/=https://mirror.test/y/",
        ]
    )
    assert got == {
        "https://raw.githubusercontent.com/org/repo/main/": "file:///srv/scripts/",
        "https://x.test/get?a=b": "file:///srv/other",
        "https://y.test/": "https://mirror.test/y/",
    }
    # A prefix ending in '/' keeps a replacement ending in '/'.
    assert parse_map_uri(["https://z.test/=file:///srv/z"]) == {"https://z.test/": "file:///srv/z/"}
    # A relative folder is taken from the working directory.
    assert parse_map_uri(["https://r.test/=scripts/"], cwd=Path("/work/t")) == {
        "https://r.test/": "file:///work/t/scripts/"
    }


@pytest.mark.parametrize(
    "bad", ["noequals", "https://a/=relative/../up/", "=file:///srv/", "https://a/=file:///srv/../etc/"]
)
def test_map_uri_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_map_uri([bad])


@pytest.mark.anyio
async def test_source_json() -> None:
    spec = {"type": "DiskImage", "uri": "file:///srv/base.qcow2", "format": "qcow2"}
    assert await parse_source(json.dumps(spec)) == spec
    with pytest.raises(UsageError, match="not valid JSON"):
        await parse_source("{not json")
    with pytest.raises(UsageError, match='"type"'):
        await parse_source('{"uri": "x"}')


@pytest.mark.anyio
async def test_source_paths_and_urls(tmp_path: Path) -> None:
    disk = tmp_path / "base.qcow2"
    await anyio.run_process(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "8M"])
    assert await parse_source("base.qcow2", cwd=tmp_path) == {
        "type": "DiskImage",
        "uri": disk.as_uri(),
        "format": "qcow2",
    }
    # No telling extension: the format comes from qemu-img.
    odd = tmp_path / "disk.img"
    disk.rename(odd)
    assert (await parse_source(str(odd)))["format"] == "qcow2"
    vhd = tmp_path / "fixed.vhd"
    vhd.write_bytes(b"\0" * 1024)
    assert (await parse_source(str(vhd)))["format"] == "vpc"
    assert await parse_source("https://images.test/a/base.vhd") == {
        "type": "DiskImage",
        "uri": "https://images.test/a/base.vhd",
        "format": "vpc",
    }
    with pytest.raises(UsageError, match="no such disk file"):
        await parse_source(str(tmp_path / "missing.qcow2"))
