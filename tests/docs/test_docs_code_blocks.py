"""Every fenced code block of README.md and docs/**/*.md is checked according to its language.

- ``python``: executed in a subprocess (``block_runner.py``) in a temporary directory holding the files the block
  names (``file:///tmp/`` outputs are redirected into it), with a temporary ``AIB_HOME``/``AIB_CACHE``, the
  installed providers disabled and the harness's fakes registered, so a build boots no VM and reaches no network;
  a build it runs must succeed. Blocks that define ``test_*`` functions run under pytest (tests marked
  ``vm``/``debian`` are only collected). ``<!-- docs-test: fragment -->`` just before a block marks a fragment: it
  is only compiled and its imports resolved; ``signature`` marks a call signature (``Name(a, *, b=...)``),
  checked against the real one.
- ``json``: parsed (a block may hold several values, or object members: ``"key": value, ...``); a template is
  validated with the template model, an object with a ``type`` with that type's spec model.
- ``toml``: parsed and loaded by :meth:`Config.load`.
- ``sh``/``console`` (and ``$ aib ...`` lines of unlabelled blocks): each ``aib ...`` command is parsed by the CLI's
  argparse parser, so unknown subcommands or flags fail. ``<!-- docs-test: synopsis -->`` marks a usage synopsis:
  each ``--flag`` it names must be an option of that subcommand.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

import aib_sdk
from aib_sdk.cli.app import build_parser
from aib_sdk.cli.args import ArgumentError
from aib_sdk.config import Config
from aib_sdk.models.loader import validate_document
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fakes import fake_template

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("block_runner.py")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<marker>[\w-]+)\s*-->")
SHELL = {"sh", "shell", "bash", "console"}
TEXT = {"", "text", "txt"}  # output, trees, paths: only their ``$ aib ...`` lines are checked
KINDS = {"python", "json", "toml", *SHELL, *TEXT}
MARKERS = {"fragment", "synopsis", "signature"}
PLACEHOLDER = re.compile(r"<([A-Za-z][\w -]*)>")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    text: str
    marker: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}:{self.lang or 'text'}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = "\n".join(line[indent:] if not line[:indent].strip() else line for line in lines[i + 1 : end])
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.search(before)
        rel = path.relative_to(ROOT).as_posix()
        found.append(Block(rel, i + 1, m["lang"].lower(), body + "\n", marker["marker"] if marker else None))
        i = end + 1
    return found


BLOCKS = [block for page in pages() for block in blocks_of(page)]


def of_kind(*langs: str) -> list[Any]:
    return [pytest.param(b, id=b.id) for b in BLOCKS if b.lang in langs]


def test_every_block_has_a_checked_language_and_a_known_marker() -> None:
    assert len(BLOCKS) >= 50
    for block in BLOCKS:
        assert block.lang in KINDS, f"{block.id}: no check for language {block.lang!r}"
        assert block.marker in {None, *MARKERS}, f"{block.id}: unknown marker {block.marker!r}"


# Python --------------------------------------------------------------------------------------------------------


def _imports_resolve(tree: ast.Module, block: Block) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [(node.module, alias.name) for alias in node.names]
        else:
            continue
        for module, attr in names:
            if module.startswith("my_"):  # the docs' stand-in for the reader's own package
                continue
            assert importlib.util.find_spec(module) is not None, f"{block.id}: cannot import {module}"
            if attr and attr != "*":
                mod = __import__(module, fromlist=[attr])
                has = hasattr(mod, attr) or importlib.util.find_spec(f"{module}.{attr}") is not None
                assert has, f"{block.id}: {module} has no {attr}"


def _workdir_files(block: Block, where: Path) -> None:
    """The files a block names (``"template.json"``, ``"t.json"``): a template using only fake types."""
    for name in set(re.findall(r"""["']([\w./-]+\.json)["']""", block.text)):
        file = where / name
        file.parent.mkdir(parents=True, exist_ok=True)
        template = fake_template()
        template["distribute"][0]["runOutputName"] = "<runOutputName>"
        file.write_text(json.dumps(template))


def _environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIB_")}
    env.update(
        AIB_HOME=str(tmp_path / "home"),
        AIB_CACHE=str(tmp_path / "cache"),
        AIB_DISABLE_PLUGINS=",".join(sorted({ep.name for ep in entry_points(group="aib_sdk")})),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])),
    )
    return env


def _check_signature(block: Block) -> None:
    """``Name(a, *, b: T = x)``: ``Name`` is exported by ``aib_sdk`` and takes exactly these parameters."""
    name, params = re.fullmatch(r"(\w+)\((.*)\)", block.text.strip(), re.S).groups()  # type: ignore[union-attr]
    documented = ast.parse(f"def f({params}): pass").body[0].args  # type: ignore[attr-defined]
    names = [a.arg for a in [*documented.posonlyargs, *documented.args, *documented.kwonlyargs]]
    actual = inspect.signature(getattr(aib_sdk, name)).parameters
    assert names == list(actual), f"{block.id}: documented {names}, actual {list(actual)}"
    kwonly = [a.arg for a in documented.kwonlyargs]
    assert kwonly == [p for p, v in actual.items() if v.kind is v.KEYWORD_ONLY], block.id


@pytest.mark.parametrize("block", of_kind("python"))
def test_python_block(block: Block, tmp_path: Path) -> None:
    if block.marker == "signature":
        _check_signature(block)
        return
    tree = compile(block.text, block.id, "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    _imports_resolve(tree, block)
    if block.marker == "fragment":
        return
    work = tmp_path / "work"
    work.mkdir()
    _workdir_files(block, work)
    script = work / "docs_block.py"
    script.write_text(block.text.replace("file:///tmp/", f"{work.as_uri()}/"))  # outputs stay in the sandbox
    defines_tests = any(
        isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test_") for n in tree.body
    )
    if defines_tests:
        script = script.rename(work / "test_docs_block.py")
        (work / "pytest.ini").write_text("[pytest]\nmarkers =\n    vm: boots a VM\n    debian: boots Debian\n")
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not vm and not debian",
            "-W",
            "error",
            str(script),
        ]
    else:
        command = [sys.executable, str(RUNNER), str(script)]
    proc = subprocess.run(command, cwd=work, env=_environment(tmp_path), capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    vm_only = defines_tests and re.search(r"pytest\.mark\.(vm|debian)\b", block.text) is not None
    # exit 5: every test was deselected (a VM test, only collected here)
    assert proc.returncode == 0 or (vm_only and proc.returncode == 5), f"{block.id}:\n{output}"
    assert "Traceback" not in output or defines_tests, f"{block.id}:\n{output}"


# JSON ----------------------------------------------------------------------------------------------------------


def json_values(text: str) -> list[Any]:
    """Every JSON value of a block: one document, several (one per line or more), or object members."""
    stripped = text.strip()
    if stripped.startswith('"'):
        stripped = "{" + stripped.rstrip(",") + "}"
    decoder, values, pos = json.JSONDecoder(), [], 0
    while pos < len(stripped):
        value, pos = decoder.raw_decode(stripped, pos)
        values.append(value)
        while pos < len(stripped) and stripped[pos] in " \t\r\n,":
            pos += 1
    return values


_PLUGINS = PluginManager(disabled=())


def _check_spec(spec: dict[str, Any], where: str) -> None:
    models = _PLUGINS.registry.spec_models
    kinds = [kind for kind in models if spec["type"] in models[kind]]
    assert kinds, f"{where}: no installed provider defines type {spec['type']!r}"
    problems = []
    for kind in kinds:
        try:
            models[kind][spec["type"]].model_validate(spec)
            return
        except ValueError as exc:
            problems.append(f"{kind}: {exc}")
    pytest.fail(f"{where}: {spec['type']} does not validate:\n" + "\n".join(problems))


def _fill_placeholders(value: Any) -> Any:
    """``<64 hex>`` and ``…`` stand for a value the reader fills in: give each a valid stand-in."""
    if isinstance(value, dict):
        return {k: _fill_placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_placeholders(v) for v in value]
    if isinstance(value, str):
        if value in {"<64 hex>", "…"}:
            return "0" * 64
        return value.replace("…", "x")
    return value


@pytest.mark.parametrize("block", of_kind("json"))
def test_json_block(block: Block) -> None:
    try:
        values = json_values(block.text)
    except json.JSONDecodeError as exc:
        pytest.fail(f"{block.id}: not JSON: {exc}")
    assert values, block.id
    for value in values:
        if not isinstance(value, dict):
            continue
        value = _fill_placeholders(value)
        if {"properties", "resources"} & value.keys() or {"source", "distribute"} <= value.keys():
            params = {name: "x" for name in PLACEHOLDER.findall(json.dumps(value))}
            errors, _ = validate_document(value, plugins=_PLUGINS, params=params)
            assert not errors, f"{block.id}: " + "; ".join(f"{i.path}: {i.message}" for i in errors)
        elif isinstance(value.get("type"), str):
            _check_spec(value, block.id)
        else:
            for key, member in value.items():  # members of a template: "source": {...}, "customize": [...]
                for spec in member if isinstance(member, list) else [member]:
                    if isinstance(spec, dict) and isinstance(spec.get("type"), str):
                        _check_spec(spec, f"{block.id}: {key}")


# TOML ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", of_kind("toml"))
def test_toml_block(block: Block, tmp_path: Path) -> None:
    try:
        data = tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"{block.id}: not TOML: {exc}")
    file = tmp_path / "aib.toml"
    file.write_text(block.text)
    config = Config.load(file, env={})
    assert config.data == data
    for table, content in data.items():
        if isinstance(content, dict) and table != "project":
            assert config.section(table).items() >= {k: v for k, v in content.items()}.items()


# Shell ---------------------------------------------------------------------------------------------------------


def aib_commands(block: Block) -> list[list[str]]:
    """The ``aib ...`` commands of a block: continuation lines joined, ``$`` prompts, env and comments removed.

    A one-word optional flag in brackets (``aib gc [--dry-run]``) is checked as that flag.
    """
    text = re.sub(r"\\\n\s*", " ", block.text)
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if block.lang in TEXT or block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        for part in re.split(r"\s*(?:;|&&|\|)\s*", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                words = part.split()
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                words.pop(0)
            if words and words[0] == "aib":
                end = next((i for i, w in enumerate(words) if w.startswith(">")), len(words))  # a redirection
                # ``[--flag]``: an optional flag shown in brackets is checked as the flag itself
                commands.append([re.sub(r"^\[(--[^\[\]]+)\]$", r"\1", w) for w in words[1:end]])
    return commands


def _options(parser: Any, words: list[str]) -> set[str]:
    sub = next(a for a in parser._subparsers._group_actions if a.choices)
    command = sub.choices[words[0]]
    return {opt for action in command._actions for opt in action.option_strings}


@pytest.mark.parametrize("block", of_kind(*SHELL, *TEXT))
def test_shell_block(block: Block) -> None:
    parser = build_parser(_PLUGINS)
    for words in aib_commands(block):
        if block.marker == "synopsis":
            named = {re.sub(r"[=\[].*", "", w.strip("[]")) for w in words if w.strip("[").startswith("--")}
            assert named <= _options(parser, words), f"{block.id}: unknown options {named - _options(parser, words)}"
            continue
        try:
            parser.parse_args(words)
        except ArgumentError as exc:
            pytest.fail(f"{block.id}: aib {shlex.join(words)}: {exc}")


def test_counts() -> None:
    """Shown with ``-s``: how many blocks of each kind the docs hold."""
    counts = Counter(b.lang or "text" for b in BLOCKS)
    print(dict(counts))
    assert counts["python"] and counts["json"] and counts["toml"] and counts["sh"]
