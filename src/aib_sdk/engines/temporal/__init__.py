"""Scale-out on Temporal: builds as workflows, ``aib worker`` processes on the build machines.

Needs the ``aib-sdk[temporal]`` extra (temporalio); nothing in the core imports this package.
"""

from __future__ import annotations

from .client import RemoteRun, TemporalEngine, result_from_json
from .settings import TemporalSettings

__all__ = ["RemoteRun", "TemporalEngine", "TemporalSettings", "result_from_json"]
