"""How the Builder names an error in a run's message, an event or a target's state (redacted, one line)."""

from __future__ import annotations

from aib_sdk.errors import AibError
from aib_sdk.redaction import redact_text
from aib_sdk.runtime import first_error


def describe(exc: BaseException) -> str:
    """The first error of ``exc`` (groups unwrapped): its text for SDK errors, else prefixed by its type."""
    exc = first_error(exc)
    text = redact_text(str(exc))
    if isinstance(exc, AibError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
