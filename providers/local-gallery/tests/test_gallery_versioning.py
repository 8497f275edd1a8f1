"""Version generation (AIB's Latest and Source schemes) and ``latest`` resolution, as pure functions."""

from __future__ import annotations

import pytest

from aib_provider_local_gallery.versioning import from_source, latest_of, next_latest
from aib_sdk.errors import DistributeError

EXISTING = ["0.1.1", "0.1.2", "1.0.0", "1.2.0", "2.0.0", "2.1.0"]


@pytest.mark.parametrize(("major", "expected"), [(-1, "2.1.1"), (2, "2.1.1"), (1, "1.2.1"), (0, "0.1.3"), (5, "5.0.1")])
def test_latest_scheme_reference_example(major: int, expected: str) -> None:
    assert next_latest(EXISTING, major) == expected


def test_latest_scheme_orders_numerically_and_starts_at_001() -> None:
    assert next_latest(["1.9.0", "1.10.0", "1.2.30"]) == "1.10.1"
    assert next_latest([]) == "0.0.1"


def test_source_scheme() -> None:
    assert from_source("3.4.5") == "3.4.5"
    with pytest.raises(DistributeError, match="not a gallery version"):
        from_source("20241105")
    with pytest.raises(DistributeError, match="needs a source image with a version"):
        from_source(None)


def test_latest_skips_excluded_versions() -> None:
    assert latest_of([("1.0.0", False), ("1.10.0", True), ("1.2.0", False)]) == "1.2.0"
    assert latest_of([("1.0.0", True)]) is None
