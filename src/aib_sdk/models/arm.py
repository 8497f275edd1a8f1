"""A small evaluator for ARM template expressions (``[parameters('x')]``, ``[concat(...)]`` …).

Only what a template needs locally is evaluated: ``parameters``, ``variables`` and cheap pure string/array
functions. Anything else (``resourceGroup()``, ``reference()``, ``guid()`` …) is *opaque*: the string is kept as
written and reported, so a caller can list it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urljoin

_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*$")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NUMBER = re.compile(r"-?\d+")


class Opaque(Exception):
    """The expression uses something that cannot be evaluated here (``functions``) or lacks parameters."""

    def __init__(self, functions: set[str] | None = None, missing: set[str] | None = None) -> None:
        self.functions = functions or set()
        self.missing = missing or set()
        super().__init__(", ".join(sorted(self.functions | self.missing)))


class ArmSyntaxError(Exception):
    """The expression cannot be parsed."""


@dataclass
class _Call:
    name: str
    args: list[Any]
    accessors: list[Any] = field(default_factory=list)  # str (property) or parsed index expression


@dataclass
class _Literal:
    value: Any


def join_path(prefix: str, key: str | int) -> str:
    """``prefix.key``, ``prefix[3]`` or ``prefix["odd key"]``: a JSON path as shown in messages."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    if _KEY.match(key):
        return f"{prefix}.{key}" if prefix else key
    return f"{prefix}[{json.dumps(key)}]"


def is_expression(text: str) -> bool:
    """Whether ``text`` is an ARM expression (``[...]`` and not an escaped ``[[...``)."""
    return len(text) >= 2 and text[0] == "[" and text[-1] == "]" and not text.startswith("[[")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def error(self, what: str) -> ArmSyntaxError:
        return ArmSyntaxError(f"{what} at offset {self.pos} in [{self.text}]")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {char!r}")
        self.pos += 1

    def parse(self) -> Any:
        node = self.expr()
        if self.peek():
            raise self.error("unexpected text")
        return node

    def expr(self) -> Any:
        char = self.peek()
        if char == "'":
            return _Literal(self.string())
        match = _NUMBER.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            return _Literal(int(match.group()))
        match = _IDENT.match(self.text, self.pos)
        if not match:
            raise self.error("expected a value")
        self.pos = match.end()
        name = match.group()
        if self.peek() != "(":
            if name.lower() in ("true", "false"):
                return _Literal(name.lower() == "true")
            if name.lower() == "null":
                return _Literal(None)
            raise self.error(f"unknown name {name!r}")
        self.pos += 1
        args: list[Any] = []
        if self.peek() != ")":
            while True:
                args.append(self.expr())
                if self.peek() == ",":
                    self.pos += 1
                    continue
                break
        self.expect(")")
        call = _Call(name, args)
        while self.peek() in (".", "["):
            if self.text[self.pos] == ".":
                self.pos += 1
                self.skip()
                prop = _IDENT.match(self.text, self.pos)
                if not prop:
                    raise self.error("expected a property name")
                self.pos = prop.end()
                call.accessors.append(prop.group())
            else:
                self.pos += 1
                call.accessors.append(self.expr())
                self.expect("]")
        return call

    def string(self) -> str:
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "'":
                if self.text[self.pos + 1 : self.pos + 2] == "'":
                    out.append("'")
                    self.pos += 2
                    continue
                self.pos += 1
                return "".join(out)
            out.append(char)
            self.pos += 1
        raise self.error("unterminated string")


def _ci_get(table: Mapping[str, Any], name: str) -> tuple[str, Any] | None:
    if name in table:
        return name, table[name]
    for key, value in table.items():
        if key.lower() == name.lower():
            return key, value
    return None


def _as_str(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def _format(fmt: str, *args: Any) -> str:
    def sub(match: re.Match[str]) -> str:
        index = int(match.group(1))
        if index >= len(args):
            raise ArmSyntaxError(f"format() has no argument {index}")
        return _as_str(args[index])

    return re.sub(r"\{(\d+)(?::[^}]*)?\}", sub, fmt)


def _concat(*args: Any) -> Any:
    if args and all(isinstance(a, list) for a in args):
        return [item for a in args for item in a]
    return "".join(_as_str(a) for a in args)


_PURE: dict[str, Callable[..., Any]] = {
    "concat": _concat,
    "format": _format,
    "tolower": lambda s: _as_str(s).lower(),
    "toupper": lambda s: _as_str(s).upper(),
    "replace": lambda s, old, new: _as_str(s).replace(_as_str(old), _as_str(new)),
    "string": _as_str,
    "trim": lambda s: _as_str(s).strip(),
    "int": int,
    "bool": lambda v: v if isinstance(v, bool) else _as_str(v).lower() == "true",
    "length": len,
    "empty": lambda v: not v,
    "equals": lambda a, b: a == b,
    "not": lambda v: not v,
    "and": lambda *v: all(v),
    "or": lambda *v: any(v),
    "if": lambda c, a, b: a if c else b,
    "coalesce": lambda *v: next((x for x in v if x is not None), None),
    "substring": lambda s, start, length=None: _as_str(s)[start : None if length is None else start + length],
    "split": lambda s, sep: re.split("|".join(map(re.escape, [sep] if isinstance(sep, str) else sep)), _as_str(s)),
    "first": lambda v: v[0],
    "last": lambda v: v[-1],
    "startswith": lambda s, p: _as_str(s).lower().startswith(_as_str(p).lower()),
    "endswith": lambda s, p: _as_str(s).lower().endswith(_as_str(p).lower()),
    "contains": lambda c, v: (v in c) if not isinstance(c, str) else _as_str(v) in c,
    "createarray": lambda *v: list(v),
    "array": lambda v: v if isinstance(v, list) else [v],
    "json": json.loads,
    "uri": lambda base, rel: urljoin(_as_str(base), _as_str(rel)),
    "uricomponent": lambda s: quote(_as_str(s), safe=""),
    "uricomponenttostring": lambda s: unquote(_as_str(s)),
}


class ArmContext:
    """The parameters and variables of one ARM template, and the caller's parameter values.

    ``params`` (from the caller, strings) win over a parameter's ``defaultValue``; a parameter with neither is
    missing, and every expression using it is opaque (``Opaque.missing`` names it). Outside an ARM deployment
    (``arm=False``) a bracketed string that is not a function call, such as a shell test ``[ -f x ]``, is text.
    """

    def __init__(
        self, template: Mapping[str, Any] | None, params: Mapping[str, str] | None = None, *, arm: bool = True
    ) -> None:
        self.arm = arm
        template = template or {}
        raw_params = template.get("parameters")
        raw_vars = template.get("variables")
        self.parameters: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        self.variables: dict[str, Any] = raw_vars if isinstance(raw_vars, dict) else {}
        self.params = dict(params or {})
        self.used_params: set[str] = set()
        self._var_cache: dict[str, Any] = {}
        self.opaque: list[tuple[str, str, Opaque]] = []
        self.errors: list[tuple[str, str]] = []
        self._var_stack: list[str] = []

    def parameter(self, name: str) -> Any:
        found = _ci_get(self.params, name)
        declared = _ci_get(self.parameters, name)
        if found is not None:
            self.used_params.add(found[0])
            kind = ""
            if declared is not None and isinstance(declared[1], dict):
                kind = str(declared[1].get("type", "")).lower()
            return _coerce(found[1], kind)
        if declared is not None and isinstance(declared[1], dict) and "defaultValue" in declared[1]:
            return self.evaluate(declared[1]["defaultValue"], strict=True)
        raise Opaque(missing={declared[0] if declared else name})

    def variable(self, name: str) -> Any:
        found = _ci_get(self.variables, name)
        if found is None:
            raise ArmSyntaxError(f"variables({name!r}) is not declared")
        key = found[0]
        if key in self._var_cache:
            return self._var_cache[key]
        if key in self._var_stack:
            raise ArmSyntaxError(f"variables({name!r}) refers to itself")
        self._var_stack.append(key)
        try:
            value = self.evaluate(found[1], strict=True)
        finally:
            self._var_stack.pop()
        self._var_cache[key] = value
        return value

    def evaluate(self, value: Any, *, strict: bool = False, path: str = "") -> Any:
        """Evaluate every expression inside ``value`` (recursively).

        With ``strict`` an opaque expression raises :class:`Opaque`; otherwise it is kept as written and noted in
        :attr:`opaque` with its ``path``; expressions that cannot be parsed go to :attr:`errors`.
        """
        if isinstance(value, str):
            return self.evaluate_string(value, strict=strict, path=path)
        if isinstance(value, list):
            return [self.evaluate(v, strict=strict, path=f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                sub = join_path(path, key)
                new_key = self.evaluate_string(key, strict=strict, path=sub)
                out[new_key if isinstance(new_key, str) else _as_str(new_key)] = self.evaluate(
                    item, strict=strict, path=sub
                )
            return out
        return value

    def evaluate_string(self, text: str, *, strict: bool = False, path: str = "") -> Any:
        """Evaluate one string: an expression, an escaped ``[[…`` literal, or plain text."""
        if text.startswith("[["):
            return text[1:]
        if not is_expression(text):
            return text
        try:
            node = _Parser(text[1:-1]).parse()
            if not self.arm and not isinstance(node, _Call):
                return text
            return self._eval(node)
        except Opaque as exc:
            if strict:
                raise
            self.opaque.append((path, text, exc))
            return text
        except ArmSyntaxError as exc:
            if strict:
                raise
            if not self.arm:
                return text
            self.errors.append((path, f"cannot evaluate ARM expression: {exc}"))
            return text

    def _eval(self, node: Any) -> Any:
        if isinstance(node, _Literal):
            return node.value
        assert isinstance(node, _Call)
        name = node.name.lower()
        if name in ("parameters", "variables"):
            arg = self._eval(node.args[0]) if node.args else None
            if not isinstance(arg, str):
                raise ArmSyntaxError(f"{node.name}() needs a name")
            result = self.parameter(arg) if name == "parameters" else self.variable(arg)
        elif name in _PURE:
            # Evaluate every argument so that all missing parameters are reported together.
            values: list[Any] = []
            opaque = Opaque()
            for arg in node.args:
                try:
                    values.append(self._eval(arg))
                except Opaque as exc:
                    opaque.functions |= exc.functions
                    opaque.missing |= exc.missing
            if opaque.functions or opaque.missing:
                raise opaque
            try:
                result = _PURE[name](*values)
            except (TypeError, ValueError, IndexError, KeyError) as exc:
                raise ArmSyntaxError(f"{node.name}(): {exc}") from exc
        else:
            opaque = Opaque(functions={node.name})
            for arg in node.args:
                try:
                    self._eval(arg)
                except Opaque as exc:
                    opaque.functions |= exc.functions
                    opaque.missing |= exc.missing
            raise opaque
        for accessor in node.accessors:
            key = accessor if isinstance(accessor, str) else self._eval(accessor)
            try:
                if isinstance(result, dict) and isinstance(key, str):
                    found = _ci_get(result, key)
                    if found is None:
                        raise KeyError(key)
                    result = found[1]
                else:
                    result = result[key]
            except (KeyError, IndexError, TypeError) as exc:
                raise ArmSyntaxError(f"cannot read {key!r} of {node.name}(): {exc}") from exc
        return result


def _coerce(value: str, kind: str) -> Any:
    if kind == "int":
        try:
            return int(value)
        except ValueError:
            return value
    if kind == "bool":
        return value.strip().lower() in ("true", "1", "yes")
    if kind in ("object", "array", "secureobject"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
