"""Bad input of every shape stays exit 1, one line, no traceback; output readers stay linear and bounded.

Attacks: 100 000-deep nesting, a 5 000-digit number, a template over 4 MiB (ARM's limit), a FIFO, a device and a
folder given as the template, one bad file among good ones in ``aib validate``, a guest printing 32 MiB without a
newline. The legitimate use (a normal template, normal output lines) still works.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from aib_sdk.cli import main
from aib_sdk.communicators.lines import LineBuffer
from aib_sdk.testing.fakes import FakePlugin, fake_template


def _one_line_error(capsys, code: int) -> str:
    captured = capsys.readouterr()
    assert code == 1, captured.err
    text = captured.err + captured.out
    assert "Traceback" not in text
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err


def test_hostile_templates_are_one_line_errors(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    cases = {
        "deep.json": ("[" * 100_000) + ("]" * 100_000),
        "deep-object.json": '{"a":' * 150 + "1" + "}" * 150,
        "digits.json": json.dumps(fake_template())[:-1] + ', "buildTimeoutInMinutes": ' + "9" * 5000 + "}",
        "huge.json": json.dumps(fake_template()) + " " * (4 * 1024 * 1024),
    }
    expected = {
        "deep.json": "nested deeper than 100 levels",
        "deep-object.json": "nested deeper than 100 levels",
        "digits.json": "invalid JSON value: Exceeds the limit",
        "huge.json": "larger than 4 MiB",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        err = _one_line_error(capsys, main(["build", str(path), "--progress", "none"]))
        assert expected[name] in err, (name, err)
    assert fakes.world.machines == []
    # A normal template still builds.
    good = tmp_path / "good.json"
    good.write_text(json.dumps(fake_template()))
    assert main(["build", str(good), "--progress", "none"]) == 0


def test_fifo_device_and_folder_are_refused_without_blocking(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    fifo = tmp_path / "t.fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        codes: list[int] = []

        def validate(p: Path = path, out: list[int] = codes) -> None:
            out.append(main(["validate", str(p)]))

        worker = threading.Thread(target=validate, daemon=True)
        worker.start()
        worker.join(60)
        assert codes, f"aib validate {path} blocked"
        captured = capsys.readouterr()
        assert codes == [1] and "not a regular file" in captured.out and "Traceback" not in captured.err
        err = _one_line_error(capsys, main(["build", str(path), "--progress", "none"]))
        assert "not a regular file" in err


def test_validate_checks_every_file(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    good = tmp_path / "a.json"
    good.write_text(json.dumps(fake_template()))
    bad = tmp_path / "bad.json"
    bad.write_text("[" * 100_000)
    rule = tmp_path / "c.json"
    rule.write_text(json.dumps(fake_template(buildTimeoutInMinutes=1)))
    code = main(["validate", str(good), str(bad), str(rule)])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert f"{bad}: JSON nested deeper than 100 levels" in captured.out
    assert f"{rule}:buildTimeoutInMinutes: buildTimeoutInMinutes must be" in captured.out
    assert str(good) not in captured.out  # the good file has no issue, and was checked all the same
    assert main(["validate", str(good)]) == 0


def test_line_buffer_is_bounded_and_linear() -> None:
    buffer = LineBuffer(max_line=64 * 1024)
    chunk = "x" * 65536
    pieces: list[str] = []
    for _ in range(512):  # 32 MiB without a newline
        pieces += buffer.feed(chunk)
        assert buffer.held < buffer.max_line  # never more than one line's worth held
    pieces += buffer.feed("tail\r\nnext")
    pieces += buffer.flush()
    assert len(pieces) == 512 + 2 and all(len(p) == 65536 for p in pieces[:512])
    assert pieces[-2:] == ["tail", "next"]
    # Ordinary output is split as before: CRLF, empty lines, a line split across chunks.
    normal = LineBuffer()
    assert normal.feed("a\r\n\nb") == ["a", ""] and normal.feed("c\n") == ["bc"] and normal.flush() == []
