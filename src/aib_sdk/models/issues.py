"""Pydantic's validation errors turned into short AIB-worded issues, each at a JSON path from the file root."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from aib_sdk.models import specs
from aib_sdk.models.arm import join_path
from aib_sdk.plugins.registry import Registry, SpecKind, type_name_of

Loc = tuple[str | int, ...]

_KIND_BY_FIELD: dict[str, SpecKind] = {
    "source": "source",
    "customize": "customizer",
    "inVMValidations": "validator",
    "distribute": "distributor",
}

_TYPE_WORDS = {
    "string": "a string",
    "int": "an integer",
    "bool": "true or false",
    "list": "a list",
    "dict": "an object",
    "model": "an object",
    "float": "a number",
}


def data_path(data: Any, loc: Sequence[str | int]) -> Loc:
    """The JSON keys of ``loc`` in ``data``: union tags (the value of ``type``/``scheme``) are dropped."""
    out: list[str | int] = []
    cur: Any = data
    for part in loc:
        in_list = isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        if in_list or (isinstance(cur, dict) and isinstance(part, str) and part in cur):
            out.append(part)
            cur = cur[part]
            continue
        is_tag = isinstance(cur, dict) and part in (cur.get("type"), cur.get("scheme"))
        if is_tag or (isinstance(part, str) and part.startswith(("function-", "tagged-union[", "union["))):
            continue
        out.append(part)
        cur = None
    return tuple(out)


def render(prefix: str, path: Iterable[str | int]) -> str:
    """``prefix`` joined with ``path`` as shown in messages (``resources[5].properties.customize[2].scriptUri``)."""
    text = prefix
    for part in path:
        text = join_path(text, part)
    return text


def _known_fields() -> set[str]:
    names: set[str] = set()
    stack: list[type[BaseModel]] = [m for m in vars(specs).values() if isinstance(m, type) and issubclass(m, BaseModel)]
    from aib_sdk.models.template import TemplateProperties, ValidateSpec

    stack += [TemplateProperties, ValidateSpec]
    for model in stack:
        for name, info in model.model_fields.items():
            alias = info.alias
            if alias is None and model.model_config.get("alias_generator") is not None:
                generator = model.model_config["alias_generator"]
                alias = generator(name) if callable(generator) else name
            names.add(alias or name)
    return names


_KNOWN: set[str] = set()


def suggest(field: str, registry: Registry | None = None, *, fields: Iterable[str] | None = None) -> str | None:
    """The field ``field`` was probably meant to be (same letters in another case, or a close spelling): among
    ``fields`` (the entry's own model) when given, else among every AIB field and every registered model's."""
    if fields is not None:
        known = set(fields)
    else:
        if not _KNOWN:
            _KNOWN.update(_known_fields())
        known = set(_KNOWN)
        if registry is not None:
            for models in registry.spec_models.values():
                for model in models.values():
                    known.update(model_fields(model))
    for name in known:
        if name.lower() == field.lower() and name != field:
            return name
    close = difflib.get_close_matches(field, sorted(known), n=1, cutoff=0.8)
    if close:
        return close[0]
    lowered = field.lower()  # a shortened or lengthened name: "compress" for "compressLevel"
    longer = sorted((n for n in known if len(lowered) >= 4 and n.lower().startswith(lowered)), key=len)
    return longer[0] if longer else None


def model_fields(model: type[BaseModel]) -> set[str]:
    """The names ``model`` accepts in a template (aliases where it has them)."""
    return {info.alias or name for name, info in model.model_fields.items()}


def entry_model(data: Any, path: Loc, registry: Registry) -> type[BaseModel] | None:
    """The registered model of the template entry directly holding ``path``'s last field (``None`` when that
    field is not directly on a ``source``/``customize[]``/``inVMValidations[]``/``distribute[]`` entry)."""
    parent = path[:-1]
    if parent == ("source",):
        kind: SpecKind | None = "source"
    elif len(parent) >= 2 and isinstance(parent[-1], int) and isinstance(parent[-2], str):
        kind = _KIND_BY_FIELD.get(parent[-2]) if parent[-2] != "source" else None
    else:
        kind = None
    if kind is None:
        return None
    entry: Any = data
    for part in parent:
        try:
            entry = entry[part]
        except (KeyError, IndexError, TypeError):
            return None
    type_name = entry.get("type") if isinstance(entry, dict) else None
    return registry.spec_models[kind].get(type_name) if isinstance(type_name, str) else None


def unknown_field_message(field: str, registry: Registry | None = None, *, model: type[BaseModel] | None = None) -> str:
    """``unknown field "x"`` with a hint drawn from ``model``'s fields (the entry's own type) when known.

    AIB's own types say so ("AIB field names are case-sensitive"); a provider's type is named instead.
    """
    hint = suggest(field, registry, fields=model_fields(model) if model is not None else None)
    owner = registry.owner.get(model) if registry is not None and model is not None else None
    third_party = model is not None and owner is not None and owner != "aib-sdk"
    text = f'unknown field "{field}"'
    if third_party:
        assert model is not None
        text += f" for {type_name_of(model)} (from {owner})"
    if hint:
        rule = "field names are case-sensitive" if third_party else "AIB field names are case-sensitive"
        text += f' ({rule}; did you mean "{hint}"?)'
    return text


def _kind_of(path: Loc) -> SpecKind | None:
    for part in reversed(path):
        if isinstance(part, str):
            return _KIND_BY_FIELD.get(part)
    return None


def _installed(registry: Registry, kind: SpecKind | None) -> str:
    if kind is None:
        return ""
    return ", ".join(sorted(registry.spec_models[kind]))


def translate(error: ErrorDetails, path: Loc, registry: Registry, data: Any = None) -> tuple[Loc, str]:
    """The issue for one pydantic error: its path (maybe moved to a field) and a short message.

    ``data``: the validated document, so that an unknown field's hint comes from its own entry's model.
    """
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    if kind in ("aib_rule", "aib_no_script"):
        field = str(ctx.get("field", ""))
        parts = [p for p in re.split(r"\.|(\[\d+\])", field) if p]
        extra: list[str | int] = [int(p[1:-1]) if p.startswith("[") else p for p in parts]
        message = error["msg"]
        if kind == "aib_no_script":
            code = "NoValidatorScript" if "inVMValidations" in path else "NoCustomizerScript"
            message += f" ({code})"
        return (*path, *extra), message
    if kind == "extra_forbidden":
        model = entry_model(data, path, registry) if path else None
        return path, unknown_field_message(str(path[-1]) if path else "?", registry, model=model)
    if kind == "missing":
        name = path[-1] if path else "?"
        if name == "distribute":
            return path, 'missing required field "distribute" (AIB needs at least one distribution target)'
        return path, f'missing required field "{name}"'
    if kind == "too_short" and path and path[-1] == "distribute":
        return path, "distribute must list at least one distribution target"
    if kind == "union_tag_invalid":
        spec_kind = _kind_of(path)
        if spec_kind is None:
            return (*path, "scheme"), f"unknown versioning scheme {ctx.get('tag')!r} (expected: Latest, Source)"
        return (*path, "type"), (
            f'unknown {spec_kind} type "{ctx.get("tag")}" (installed: {_installed(registry, spec_kind)})'
        )
    if kind == "union_tag_not_found":
        spec_kind = _kind_of(path)
        if spec_kind is None:
            return (*path, "scheme"), 'missing "scheme" (one of: Latest, Source)'
        return (*path, "type"), f'missing "type" (one of: {_installed(registry, spec_kind)})'
    if kind == "literal_error" and path and path[-1] == "type" and _kind_of(path[:-1]) is not None:
        spec_kind = _kind_of(path[:-1])
        return path, f'unknown {spec_kind} type "{value}" (installed: {_installed(registry, spec_kind)})'
    if kind == "literal_error":
        return path, f"must be one of {ctx.get('expected')} (got {value!r})"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "?")
        return path, f"must be {op} {bound} (got {value!r})"
    match = re.match(r"^(string|int|bool|list|dict|model|float)_(type|parsing|attributes_type)$", kind)
    if match:
        return path, f"must be {_TYPE_WORDS[match.group(1)]} (got {value!r})"
    if kind == "value_error":
        return path, error["msg"].removeprefix("Value error, ")
    return path, error["msg"]
