"""The conformance corpus: real AIB templates that must validate, and real files AIB refuses.

The corpus lives in the ``shared`` folder beside the checkout (``shared/conformance/aib-templates``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aib_sdk.models.loader import read_json_file, validate_document
from aib_sdk.plugins.manager import PluginManager

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance" / "aib-templates"


def _corpus(folder: str) -> list[Path]:
    """The corpus files in ``folder``; a missing corpus gives one path that does not exist, so its test fails
    (an empty parameter list would only be skipped)."""
    return sorted((CORPUS / folder).glob("*.json")) or [CORPUS / folder / "missing-corpus.json"]


TEMPLATES = _corpus("templates")
EXPECTED_ERRORS = _corpus("expected-errors")


@pytest.fixture(scope="module")
def plugins() -> PluginManager:
    return PluginManager(entry_points=False)


def test_corpus_is_present() -> None:
    assert len(TEMPLATES) >= 100, f"conformance corpus not found under {CORPUS}"
    assert all(p.is_file() for p in EXPECTED_ERRORS), f"no expected-errors under {CORPUS}"


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.name for p in TEMPLATES])
def test_real_template_validates(path: Path, plugins: PluginManager) -> None:
    errors, warnings = validate_document(read_json_file(path), plugins=plugins)
    assert [str(e) for e in errors] == []
    assert all(w.severity == "warning" for w in warnings)


@pytest.mark.parametrize("path", EXPECTED_ERRORS, ids=[p.name for p in EXPECTED_ERRORS])
def test_refused_file_fails_as_expected(path: Path, plugins: PluginManager) -> None:
    pattern = path.with_suffix(".expect").read_text().strip()
    errors, _ = validate_document(read_json_file(path), plugins=plugins)
    assert errors, f"{path.name} should fail validation"
    assert any(re.search(pattern, f"{e.path}: {e.message}") for e in errors), [str(e) for e in errors]


def test_misspelled_field_in_old_sample_is_a_warning(plugins: PluginManager) -> None:
    path = CORPUS / "templates" / "azvmimagebuilder__solutions__4_Using_ENV_Variables__devOpsEnvTemplate.json"
    errors, warnings = validate_document(read_json_file(path), plugins=plugins)
    assert errors == []
    assert any(w.path.endswith("aritfactTags") and 'did you mean "artifactTags"' in w.message for w in warnings)
