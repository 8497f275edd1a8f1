"""The conformance corpus: real AIB templates that must validate, and real files AIB refuses.

The corpus is an external dataset (``aib_sdk.testing.corpus``: ``AIB_CONFORMANCE_CORPUS``, else
``shared/conformance/aib-templates`` beside the checkout); without it these tests are skipped, or fail under CI.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aib_sdk.models.loader import read_json_file, validate_document
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.corpus import Corpus, parametrize_corpus

OLD_SAMPLE = "azvmimagebuilder__solutions__4_Using_ENV_Variables__devOpsEnvTemplate.json"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_corpus(metafunc, "template", "templates")
    parametrize_corpus(metafunc, "refused", "expected-errors")


@pytest.fixture(scope="module")
def plugins() -> PluginManager:
    return PluginManager(entry_points=False)


def test_corpus_is_present(aib_conformance_corpus: Corpus) -> None:
    assert len(aib_conformance_corpus.files("templates")) >= 100
    refused = aib_conformance_corpus.files("expected-errors")
    assert refused and all(p.with_suffix(".expect").is_file() for p in refused)


def test_real_template_validates(aib_conformance_corpus: Corpus, template: Path, plugins: PluginManager) -> None:
    errors, warnings = validate_document(read_json_file(template), plugins=plugins)
    assert [str(e) for e in errors] == []
    assert all(w.severity == "warning" for w in warnings)


def test_refused_file_fails_as_expected(aib_conformance_corpus: Corpus, refused: Path, plugins: PluginManager) -> None:
    pattern = refused.with_suffix(".expect").read_text().strip()
    errors, _ = validate_document(read_json_file(refused), plugins=plugins)
    assert errors, f"{refused.name} should fail validation"
    assert any(re.search(pattern, f"{e.path}: {e.message}") for e in errors), [str(e) for e in errors]


def test_misspelled_field_in_old_sample_is_a_warning(aib_conformance_corpus: Corpus, plugins: PluginManager) -> None:
    path = aib_conformance_corpus.root / "templates" / OLD_SAMPLE
    errors, warnings = validate_document(read_json_file(path), plugins=plugins)
    assert errors == []
    assert any(w.path.endswith("aritfactTags") and 'did you mean "artifactTags"' in w.message for w in warnings)
