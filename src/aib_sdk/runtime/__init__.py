"""The provider runtime: the plumbing every provider shares (cleanup, worker pools, error groups, retries).

Providers keep only what is specific to their service; anything here is written once for the whole tree. The HTTP
pieces live in submodules that import httpx: :mod:`aib_sdk.runtime.http` (the retrying client and its transport
seam) and :mod:`aib_sdk.runtime.download` (the verified, resumable download and the one local-path rule).
"""

from __future__ import annotations

from .cleanup import cleanup_scope
from .errors import first_error, is_cancellation, leaves, raise_first
from .pool import bounded_map
from .retry import (
    DEFAULT_POLICY,
    RETRY_STATUS,
    RetriesExhausted,
    RetryableError,
    RetryPolicy,
    retry_after,
    retrying,
)

__all__ = [
    "DEFAULT_POLICY",
    "RETRY_STATUS",
    "RetriesExhausted",
    "RetryPolicy",
    "RetryableError",
    "bounded_map",
    "cleanup_scope",
    "first_error",
    "is_cancellation",
    "leaves",
    "raise_first",
    "retry_after",
    "retrying",
]
