"""docs/aib-compatibility.md stays true: every row has a status and names tests that exist; the counts add up."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "aib-compatibility.md"
STATUSES = {"honoured", "honoured differently", "warned", "honoured differently / warned"}


def rows() -> list[list[str]]:
    lines = [line for line in DOC.read_text().splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_every_row_has_a_status_and_existing_tests() -> None:
    table = rows()
    assert len(table) >= 40
    for prop, status, _how, tests in table:
        assert status in STATUSES, prop
        refs = re.findall(r"`([^`]*::[^`]+)`", tests)
        assert refs, f"{prop}: no test named"
        current = ""
        for ref in refs:
            file, name = ref.split("::")
            current = file or current
            source = (ROOT / current).read_text()
            assert re.search(rf"def {re.escape(name)}\b", source), f"{prop}: {ref} not found"


def test_counts_line_matches_the_table() -> None:
    counts = Counter("honoured differently" if s.startswith("honoured differently") else s for _, s, _, _ in rows())
    text = DOC.read_text()
    expected = (
        f"{sum(counts.values())} rows: {counts['honoured']} honoured, {counts['honoured differently']} honoured "
        f"differently, {counts['warned']} warned"
    )
    assert expected in " ".join(text.split()), expected
