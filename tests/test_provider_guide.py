"""docs/writing-a-provider.md shows the example provider as it is (each block is the file it names), and the
example stays within 100 lines including its pyproject."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "writing-a-provider.md"
EXAMPLE = ROOT / "examples" / "aib-provider-hello"


def test_every_file_block_of_the_guide_is_the_file_it_names() -> None:
    blocks = re.findall(r"```\w*\n# (examples/\S+)\n(.*?)```", GUIDE.read_text(), re.S)
    assert {name for name, _ in blocks} >= {
        "examples/aib-provider-hello/pyproject.toml",
        "examples/aib-provider-hello/src/aib_provider_hello/specs.py",
        "examples/aib-provider-hello/src/aib_provider_hello/hooks.py",
        "examples/aib-provider-hello/src/aib_provider_hello/provider.py",
        "examples/aib-provider-hello/tests/test_hello.py",
    }
    for name, body in blocks:
        assert body == (ROOT / name).read_text(), f"{name} differs from its copy in the guide"


def test_the_example_provider_is_at_most_100_lines() -> None:
    files = [EXAMPLE / "pyproject.toml", *sorted((EXAMPLE / "src").rglob("*.py"))]
    lines = sum(len(f.read_text().splitlines()) for f in files)
    assert lines <= 100
    assert f"{lines} lines including its `pyproject.toml`" in GUIDE.read_text()
