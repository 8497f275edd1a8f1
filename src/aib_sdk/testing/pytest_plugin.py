"""The pytest plugin (``pytest11`` entry point ``aib_sdk``): fixtures only, no autouse side effects."""

from __future__ import annotations

from aib_sdk.testing.corpus import aib_conformance_corpus
from aib_sdk.testing.fixtures_core import *  # noqa: F403
from aib_sdk.testing.fixtures_vm import *  # noqa: F403

__all__ = ["aib_conformance_corpus"]
