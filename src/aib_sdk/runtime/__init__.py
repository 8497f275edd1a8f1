"""The provider runtime: the plumbing every provider shares (cleanup, worker pools, error groups, retries).

Providers keep only what is specific to their service; anything here is written once for the whole tree.
"""

from __future__ import annotations

from .cleanup import cleanup_scope
from .errors import first_error, is_cancellation, leaves, raise_first
from .pool import bounded_map

__all__ = ["bounded_map", "cleanup_scope", "first_error", "is_cancellation", "leaves", "raise_first"]
