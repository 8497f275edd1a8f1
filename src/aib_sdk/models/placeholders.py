"""Unfilled values in a template: ``<placeholders>`` and ARM expressions kept as written."""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"<([A-Za-z][\w-]*)>")


def placeholder_names(text: str) -> list[str]:
    """The names of the ``<placeholders>`` in ``text``, in order, without repeats."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def is_unresolved(value: object) -> bool:
    """Whether ``value`` is a string still holding a placeholder or an unevaluated ARM expression."""
    if not isinstance(value, str):
        return False
    if PLACEHOLDER.search(value):
        return True
    return len(value) >= 2 and value[0] == "[" and value[-1] == "]" and not value.startswith("[[")


def fill_placeholders(text: str, params: Mapping[str, str]) -> str:
    """``text`` with every ``<name>`` that ``params`` holds replaced (exact name first, then case-insensitive)."""
    lowered = {k.lower(): v for k, v in params.items()}

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in params:
            return params[name]
        return lowered.get(name.lower(), match.group(0))

    return PLACEHOLDER.sub(sub, text)
