"""The conformance corpus: real AIB templates written by others, kept outside the repository.

One place says where it is: ``AIB_CONFORMANCE_CORPUS`` (a folder), else ``shared/conformance/aib-templates`` beside
the checkout. When it is missing, corpus tests are skipped with a message naming the folder, except under CI
(``CI=true``) or when ``AIB_CONFORMANCE_CORPUS`` is set: then they fail with that message, so a misconfigured CI
never passes by running nothing.

- ``locate_corpus(checkout)`` — the :class:`Corpus` (present or not) for a checkout folder;
- ``aib_conformance_corpus`` — the fixture: the present corpus, or the skip/fail above;
- ``parametrize_corpus(metafunc, argname, folder)`` — for ``pytest_generate_tests``: one test per corpus file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CORPUS_ENV", "Corpus", "aib_conformance_corpus", "locate_corpus", "parametrize_corpus"]

CORPUS_ENV = "AIB_CONFORMANCE_CORPUS"
BESIDE_CHECKOUT = Path("shared") / "conformance" / "aib-templates"


@dataclass(frozen=True)
class Corpus:
    """The corpus folder (``templates/``, ``expected-errors/``) and whether its location was asked for explicitly."""

    root: Path
    explicit: bool

    @property
    def present(self) -> bool:
        return (self.root / "templates").is_dir()

    @property
    def required(self) -> bool:
        """Whether a missing corpus fails the run (CI, or an explicit location) instead of skipping its tests."""
        return self.explicit or os.environ.get("CI", "").lower() == "true"

    @property
    def missing_message(self) -> str:
        how = f"{CORPUS_ENV} names it" if self.explicit else f"set {CORPUS_ENV} to its folder"
        return f"conformance corpus not found at {self.root} ({how}; see README 'Conformance corpus')"

    def files(self, folder: str) -> list[Path]:
        """The ``*.json`` files of ``folder`` (``templates`` or ``expected-errors``), sorted; [] when absent."""
        return sorted((self.root / folder).glob("*.json"))

    def template(self, name: str) -> dict[str, Any]:
        """The parsed JSON of ``templates/<name>`` (tests change their copy in memory, never the file)."""
        loaded: dict[str, Any] = json.loads((self.root / "templates" / name).read_text(encoding="utf-8"))
        return loaded

    def require(self) -> Corpus:
        """This corpus if present; else skip the calling test, or fail it when the corpus is required."""
        if not self.present:
            if self.required:
                pytest.fail(self.missing_message, pytrace=False)
            pytest.skip(self.missing_message)
        return self


def locate_corpus(checkout: Path) -> Corpus:
    """``$AIB_CONFORMANCE_CORPUS``, else ``<checkout>/../shared/conformance/aib-templates``."""
    named = os.environ.get(CORPUS_ENV, "")
    if named:
        return Corpus(Path(named).expanduser().resolve(), explicit=True)
    return Corpus((checkout.resolve().parent / BESIDE_CHECKOUT), explicit=False)


@pytest.fixture(scope="session")
def aib_conformance_corpus(request: pytest.FixtureRequest) -> Corpus:
    """The conformance corpus beside the pytest root (or ``$AIB_CONFORMANCE_CORPUS``); skips or fails if absent."""
    return locate_corpus(request.config.rootpath).require()


def parametrize_corpus(metafunc: pytest.Metafunc, argname: str, folder: str) -> None:
    """Parametrize ``argname`` with the corpus's ``folder`` files. With no corpus, one ``no-corpus`` case (``None``)
    stands in: the test must also request ``aib_conformance_corpus``, which skips or fails it with the reason."""
    if argname not in metafunc.fixturenames:
        return
    files: list[Path | None] = list(locate_corpus(metafunc.config.rootpath).files(folder))
    if files:
        metafunc.parametrize(argname, files, ids=[p.name for p in files if p is not None])
    else:
        metafunc.parametrize(argname, [None], ids=["no-corpus"])
