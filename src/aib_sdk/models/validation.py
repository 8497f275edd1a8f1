"""Validation of ``properties`` against the registry's model, with stand-ins for unresolved values."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from aib_sdk.errors import Issue
from aib_sdk.models.issues import Loc, data_path, render, translate, unknown_field_message
from aib_sdk.models.template import TemplateProperties

if TYPE_CHECKING:
    from aib_sdk.plugins.manager import PluginManager


def _neutral(error_type: str, ctx: Mapping[str, Any]) -> tuple[bool, Any]:
    """A valid stand-in for an unresolved value that failed ``error_type`` (validation only)."""
    if error_type in ("int_parsing", "int_type", "int_from_float", "float_parsing", "float_type"):
        return True, 0
    if error_type in ("bool_parsing", "bool_type"):
        return True, False
    if error_type in ("greater_than_equal", "less_than_equal"):
        return True, next(iter(ctx.values()))
    if error_type == "greater_than":
        return True, next(iter(ctx.values())) + 1
    if error_type == "less_than":
        return True, next(iter(ctx.values())) - 1
    if error_type == "literal_error":
        match = re.search(r"'([^']*)'", str(ctx.get("expected", "")))
        return (True, match.group(1)) if match else (False, None)
    if error_type == "list_type":
        return True, []
    if error_type in ("dict_type", "model_type", "model_attributes_type"):
        return True, {}
    if error_type == "value_error":
        return True, 0
    return False, None


def _set_at(data: Any, path: Loc, value: Any, *, delete: bool = False) -> bool:
    cur = data
    for part in path[:-1]:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = path[-1] if path else None
    if last is None:
        return False
    if isinstance(cur, dict) and isinstance(last, str):
        if delete:
            cur.pop(last, None)
        else:
            cur[last] = value
        return True
    if isinstance(cur, list) and isinstance(last, int) and 0 <= last < len(cur) and not delete:
        cur[last] = value
        return True
    return False


def validate_properties(
    model: type[TemplateProperties],
    props: dict[str, Any],
    *,
    prefix: str,
    lenient: bool,
    unresolved_paths: set[Loc],
    plugins: PluginManager,
) -> tuple[TemplateProperties | None, list[Issue], list[Issue]]:
    """Validate ``props``; returns (the model or ``None``, errors, warnings) with paths under ``prefix``.

    Unresolved values (``unresolved_paths``) that break a type or bound get a valid stand-in, and with ``lenient``
    (an older API version) unknown fields are dropped with a warning; then validation runs again.
    """
    data = copy.deepcopy(props)
    warnings: list[Issue] = []
    registry = plugins.spec_registry
    for _attempt in range(8):
        try:
            return model.model_validate(data), [], warnings
        except ValidationError as exc:
            errors = exc.errors()
        changed = False
        real: list[tuple[Loc, str]] = []
        for error in errors:
            path = data_path(data, error["loc"])
            if path in unresolved_paths:
                ok, value = _neutral(error["type"], error.get("ctx") or {})
                if ok and _set_at(data, path, value):
                    changed = True
                    continue
            if error["type"] == "extra_forbidden" and lenient and _set_at(data, path, None, delete=True):
                message = unknown_field_message(str(path[-1]), registry)
                warnings.append(Issue(render(prefix, path), f"{message}; ignored by this API version", "warning"))
                changed = True
                continue
            real.append(translate(error, path, registry))
        if not changed:
            issues = [Issue(render(prefix, path), message) for path, message in real]
            return None, issues, warnings
    raise AssertionError("template validation did not settle")  # pragma: no cover


def to_loc(path: str) -> Loc:
    parts: list[str | int] = []
    for match in re.finditer(r'\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]|\.?([^.\[]+)', path):
        if match.group(1) is not None:
            parts.append(int(match.group(1)))
        elif match.group(2) is not None:
            parts.append(json.loads(f'"{match.group(2)}"'))
        else:
            parts.append(match.group(3))
    return tuple(parts)
