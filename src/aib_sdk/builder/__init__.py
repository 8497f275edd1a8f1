"""The Builder: runs an image template with AIB's semantics (see :mod:`aib_sdk.builder.core`)."""

from __future__ import annotations

from aib_sdk.builder.core import Builder
from aib_sdk.errors import MissingParamsError

__all__ = ["Builder", "MissingParamsError"]
