"""``python -m aib_sdk`` runs the ``aib`` CLI."""

from __future__ import annotations

import sys

from aib_sdk.cli import main

sys.exit(main())
