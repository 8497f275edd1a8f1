"""``aib validate`` and ``aib schema``: output format, streams and exit codes, with the real template loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aib_sdk.cli import main

AIB = Path(sys.executable).parent / "aib"
SOURCE = {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "latest"}


def write(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


@pytest.fixture(autouse=True)
def _no_user_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIB_DISABLE_PLUGINS", "")


def test_two_errors_both_reported_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        "bad.json",
        {
            "source": SOURCE,
            "customize": [{"type": "Shell", "name": "x", "inline": ["echo hi"], "bogus": 1}],
            "distribute": [{"type": "VHD"}],
        },
    )
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:customize[0].bogus: ")
    assert lines[1].startswith(f"{path}:distribute[0].runOutputName: ")
    assert captured.err == ""


def test_warnings_only_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        "old.json",
        {
            "type": "Microsoft.VirtualMachineImages/imageTemplates",
            "apiVersion": "2020-02-14",
            "name": "w",
            "location": "westus",
            "identity": {"type": "None"},
            "properties": {
                "source": SOURCE,
                "customize": [{"type": "Shell", "name": "x", "inline": ["echo <greeting>"], "extraField": 2}],
                "distribute": [{"type": "VHD", "runOutputName": "v"}],
            },
        },
    )
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    warnings = captured.err.splitlines()
    assert f"{path}:properties.customize[0].extraField: warning: " in captured.err
    assert any(
        w.startswith(f"{path}:properties.customize[0].inline[0]: warning: ") and "greeting" in w for w in warnings
    )
    # A --param fills the placeholder: its warning goes away.
    assert main(["validate", str(path), "--param", "greeting=hello"]) == 0
    assert "greeting" not in capsys.readouterr().err


def test_bad_json_and_missing_file_no_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "broken.json", '{"source": \n')
    good = write(tmp_path, "good.json", {"source": SOURCE, "distribute": [{"type": "VHD", "runOutputName": "v"}]})
    missing = tmp_path / "missing.json"
    assert main(["validate", str(bad), str(good), str(missing)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{bad}: invalid JSON at line 2")
    assert lines[1].startswith(f"{missing}: ")
    assert "Traceback" not in captured.err
    assert main(["validate", str(good)]) == 0


def test_validate_subprocess(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.json", {"source": SOURCE, "distribute": [{"type": "VHD"}]})
    proc = subprocess.run([str(AIB), "validate", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"{bad}:distribute[0].runOutputName: ")
    assert "Traceback" not in proc.stderr


def test_schema_is_json_with_installed_types(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    text = json.dumps(schema)
    for type_name in ("DiskFile", "VHD", "Shell", "PlatformImage"):
        assert f'"{type_name}"' in text
