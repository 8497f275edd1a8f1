"""``python -m aib_sdk`` runs the ``aib`` CLI."""

from __future__ import annotations

from aib_sdk.cli import console

console()
