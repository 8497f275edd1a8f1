"""Where the conformance corpus is looked for, and what a missing corpus does to its tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aib_sdk.testing.corpus import CORPUS_ENV, locate_corpus


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout folder with nothing beside it; no CI and no corpus variable."""
    monkeypatch.delenv(CORPUS_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    (tmp_path / "repo").mkdir()
    return tmp_path / "repo"


def test_default_is_shared_folder_beside_the_checkout(checkout: Path) -> None:
    templates = checkout.parent / "shared" / "conformance" / "aib-templates" / "templates"
    corpus = locate_corpus(checkout)
    assert corpus.root == templates.parent and not corpus.explicit and not corpus.present
    templates.mkdir(parents=True)
    (templates / "t.json").write_text(json.dumps({"properties": {"source": {}}}))
    assert corpus.present and corpus.require() is corpus
    assert corpus.files("templates") == [templates / "t.json"] and corpus.files("expected-errors") == []
    assert corpus.template("t.json") == {"properties": {"source": {}}}


def test_missing_corpus_skips_with_the_folder_named(checkout: Path) -> None:
    with pytest.raises(pytest.skip.Exception) as skipped:
        locate_corpus(checkout).require()
    expected = checkout.parent / "shared" / "conformance" / "aib-templates"
    assert str(skipped.value) == f"conformance corpus not found at {expected} (set {CORPUS_ENV} to its folder; " + (
        "see README 'Conformance corpus')"
    )


def test_missing_corpus_fails_under_ci(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"conformance corpus not found at .*shared/conformance"):
        locate_corpus(checkout).require()


def test_named_corpus_wins_and_must_exist(checkout: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (checkout.parent / "shared" / "conformance" / "aib-templates" / "templates").mkdir(parents=True)
    monkeypatch.setenv(CORPUS_ENV, str(tmp_path / "elsewhere"))
    corpus = locate_corpus(checkout)
    assert corpus.root == tmp_path / "elsewhere" and corpus.explicit and not corpus.present
    with pytest.raises(pytest.fail.Exception, match=f"not found at {tmp_path / 'elsewhere'} \\({CORPUS_ENV} names"):
        corpus.require()
    (tmp_path / "elsewhere" / "templates").mkdir(parents=True)
    assert locate_corpus(checkout).require().root == tmp_path / "elsewhere"
