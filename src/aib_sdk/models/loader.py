"""Read an image template in any of its forms and validate it against the installed providers' types.

Forms: a bare ``properties`` object, one resource (anything with ``properties.source``), or an ARM deployment
whose ``resources[]`` hold one or more image templates. ARM expressions are evaluated where that can be done
locally, ``<placeholders>`` are filled from the caller's parameters, and what remains is reported, not refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aib_sdk.errors import Issue, TemplateError, UsageError
from aib_sdk.models.arm import ArmContext, Opaque, is_expression, join_path
from aib_sdk.models.issues import Loc, unknown_field_message
from aib_sdk.models.local_support import local_warnings
from aib_sdk.models.locate import Candidate, candidates, find_image_templates, select
from aib_sdk.models.placeholders import fill_placeholders, is_unresolved, placeholder_names
from aib_sdk.models.specs import NAME_PATTERN
from aib_sdk.models.template import (
    ARM_RESOURCE_FIELDS,
    ENVELOPE_FIELDS,
    TemplateProperties,
    build_properties_model,
)
from aib_sdk.models.validation import to_loc, validate_properties
from aib_sdk.routing import apply_profile

if TYPE_CHECKING:
    from aib_sdk.plugins.manager import PluginManager

__all__ = [
    "LoadedTemplate",
    "Unresolved",
    "find_image_templates",
    "load_template",
    "read_json_file",
    "validate_document",
]

DEFAULT_API_VERSION = "2024-02-01"
"""The rules used when a template names no API version, or one that cannot be resolved."""

_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_IDENTITY_REQUIRED_FROM = "2020-02-14"
# Fields a local run reads (relative to ``properties``); unresolved values elsewhere do not block a build.
USED_FIELDS = (
    "source",
    "customize",
    "validate",
    "distribute",
    "optimize",
    "errorHandling",
    "buildTimeoutInMinutes",
    "vmProfile.vmSize",
    "vmProfile.osDiskSizeGB",
    "vmProfile.vnetConfig.subnetId",
    "additionalDataDisks",
)
# Recorded as given, never acted upon (so a placeholder there does not block a build): stagingResourceGroup,
# managedResourceTags, identity, location, tags.


@dataclass
class Unresolved:
    """A value still unfilled: a ``<placeholder>`` or an ARM expression that cannot be evaluated locally.

    ``path`` is relative to the file root; ``names`` are the parameter names to pass (``--param NAME=VALUE``), or
    for an expression that needs Azure the functions it calls.
    """

    path: str
    text: str
    names: list[str]
    kind: Literal["placeholder", "expression"]


@dataclass
class LoadedTemplate:
    """A validated template and what was learnt while reading it."""

    properties: TemplateProperties
    name: str | None
    api_version: str | None
    warnings: list[Issue] = field(default_factory=list)
    unresolved: list[Unresolved] = field(default_factory=list)
    path_prefix: str = ""
    raw_properties: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    location: str | None = None
    """The resource's ``location`` (recorded with the staging directory; the build itself runs on this host)."""

    def unresolved_used(self) -> list[Unresolved]:
        """The unresolved values in fields a local run uses (not identity, location, tags, proxyVmSize …)."""
        out = []
        for item in self.unresolved:
            rel = _relative(item.path, self.path_prefix)
            if rel is not None and any(_under(rel, used) for used in USED_FIELDS):
                out.append(item)
        return out


def _relative(path: str, prefix: str) -> str | None:
    if not prefix:
        return path
    if path == prefix:
        return ""
    if path.startswith(prefix) and path[len(prefix)] in ".[":
        return path[len(prefix) :].lstrip(".")
    return None


def _under(path: str, parent: str) -> bool:
    return path == parent or (path.startswith(parent) and path[len(parent)] in ".[")


# Loading ---------------------------------------------------------------------------------------------------------


def _fill(value: Any, params: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return fill_placeholders(value, params)
    if isinstance(value, list):
        return [_fill(v, params) for v in value]
    if isinstance(value, dict):
        return {fill_placeholders(k, params): _fill(v, params) for k, v in value.items()}
    return value


def _collect_unresolved(value: Any, path: str, opaque: dict[str, Opaque], out: list[Unresolved]) -> None:
    def note(text: str, at: str) -> None:
        why = opaque.get(at) if is_expression(text) else None
        if why is not None and not why.functions:
            out.append(Unresolved(at, text, sorted(why.missing), "placeholder"))
        elif why is not None:
            out.append(Unresolved(at, text, sorted(why.functions), "expression"))
        elif placeholder_names(text):
            out.append(Unresolved(at, text, placeholder_names(text), "placeholder"))

    if isinstance(value, str):
        note(value, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _collect_unresolved(item, f"{path}[{index}]", opaque, out)
    elif isinstance(value, dict):
        for key, item in value.items():
            sub = join_path(path, key)
            note(key, sub)
            _collect_unresolved(item, sub, opaque, out)


def _warning_for(item: Unresolved) -> Issue:
    if item.kind == "placeholder":
        params = " ".join(f"--param {n}=VALUE" for n in item.names)
        what = "unfilled parameter" + ("s " if len(item.names) > 1 else " ") + ", ".join(item.names)
        return Issue(item.path, f"{what} (pass {params})", "warning")
    funcs = ", ".join(f"{n}()" for n in item.names)
    why = f" (needs Azure: {funcs})" if funcs else ""
    return Issue(item.path, f"ARM expression {item.text} cannot be evaluated locally{why}", "warning")


def _api_rules(api_version: Any) -> tuple[str | None, bool]:
    """(the API version if known, whether unknown fields are only warnings)."""
    if isinstance(api_version, str) and _API_VERSION.match(api_version):
        return api_version, api_version[:10] < DEFAULT_API_VERSION
    return None, False


def load_template(
    doc: Any,
    *,
    plugins: PluginManager,
    params: Mapping[str, str] | None = None,
    resource: str | None = None,
    profile: str | None = None,
    source: Mapping[str, Any] | None = None,
) -> LoadedTemplate:
    """Find, evaluate and validate the image template in ``doc`` (any form).

    ``params`` fill ARM parameters and ``<placeholders>``; ``profile`` rewrites ids (:func:`apply_profile`);
    ``source`` replaces ``properties.source``. Raises :class:`TemplateError` with every issue at once, or
    :class:`UsageError` when the file holds several templates and ``resource`` does not pick one.
    """
    cand = select(candidates(doc), resource, params)
    return _load(cand, plugins=plugins, params=params, profile=profile, source=source)


def _load(
    cand: Candidate,
    *,
    plugins: PluginManager,
    params: Mapping[str, str] | None,
    profile: str | None = None,
    source: Mapping[str, Any] | None = None,
) -> LoadedTemplate:
    ctx = ArmContext(cand.arm_root, params, arm=cand.arm_root is not None)
    evaluated = ctx.evaluate(cand.resource, path=cand.resource_path)
    if params:
        evaluated = _fill(evaluated, params)
    issues = [Issue(path, message) for path, message in ctx.errors]
    warnings: list[Issue] = []
    prefix = cand.properties_prefix

    if cand.bare:
        envelope: dict[str, Any] = {}
        props = evaluated
        api_version, lenient = None, False
    else:
        envelope = evaluated
        props = evaluated.get("properties")
        api_version, lenient = _api_rules(envelope.get("apiVersion"))
        for key in envelope:
            if key in ENVELOPE_FIELDS or key in ARM_RESOURCE_FIELDS or key.startswith("$"):
                continue
            at = join_path(cand.resource_path, key)
            if lenient:
                warnings.append(Issue(at, unknown_field_message(key) + "; ignored by this API version", "warning"))
            else:
                issues.append(Issue(at, unknown_field_message(key)))
        name = envelope.get("name")
        if isinstance(name, str) and not is_unresolved(name) and not NAME_PATTERN.match(name):
            issues.append(
                Issue(join_path(cand.resource_path, "name"), "template name must match ^[A-Za-z0-9-_.]{1,64}$")
            )
        if "identity" not in envelope and (api_version or DEFAULT_API_VERSION) >= _IDENTITY_REQUIRED_FROM:
            warnings.append(
                Issue(
                    join_path(cand.resource_path, "identity"),
                    f"identity is required by API version {api_version or DEFAULT_API_VERSION} "
                    "(local builds do not use it)",
                    "warning",
                )
            )
    if not isinstance(props, dict):
        issues.append(Issue(prefix or "", "properties must be an object"))
        raise TemplateError(issues, warnings=warnings)

    props = apply_profile(props, profile)
    if source is not None:
        replaced = ctx.evaluate(dict(source), path=join_path(prefix, "source"))
        props = {**props, "source": _fill(replaced, params) if params else replaced}
    if not cand.bare:
        envelope = {**envelope, "properties": props}

    opaque = {path: why for path, _text, why in ctx.opaque}
    unresolved: list[Unresolved] = []
    _collect_unresolved(envelope if not cand.bare else props, cand.resource_path, opaque, unresolved)
    warnings += [_warning_for(item) for item in unresolved]
    warnings += local_warnings(None if cand.bare else envelope, props, resource=cand.resource_path, prefix=prefix)

    unresolved_paths: set[Loc] = set()
    for item in unresolved:
        rel = _relative(item.path, prefix)
        if rel is not None:
            unresolved_paths.add(to_loc(rel))

    model = build_properties_model(plugins.spec_registry)
    properties, errors, more_warnings = validate_properties(
        model, props, prefix=prefix, lenient=lenient, unresolved_paths=unresolved_paths, plugins=plugins
    )
    warnings += more_warnings
    issues += errors
    if issues or properties is None:
        raise TemplateError(issues, warnings=warnings)

    raw_name = envelope.get("name")
    location = envelope.get("location")
    canonical = json.dumps(props, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return LoadedTemplate(
        properties=properties,
        name=raw_name if isinstance(raw_name, str) and not is_unresolved(raw_name) else None,
        api_version=api_version,
        warnings=warnings,
        unresolved=unresolved,
        path_prefix=prefix,
        raw_properties=props,
        digest=hashlib.sha256(canonical.encode()).hexdigest(),
        location=location if isinstance(location, str) and not is_unresolved(location) else None,
    )


def validate_document(
    doc: Any, *, plugins: PluginManager, params: Mapping[str, str] | None = None
) -> tuple[list[Issue], list[Issue]]:
    """(errors, warnings) for every image template in ``doc``; paths are relative to the file root."""
    found = candidates(doc)
    if not found:
        try:
            select(found, None, params)
        except TemplateError as exc:
            return exc.issues, []
    errors: list[Issue] = []
    warnings: list[Issue] = []
    for cand in found:
        try:
            loaded = _load(cand, plugins=plugins, params=params)
        except TemplateError as exc:
            errors += exc.issues
            warnings += exc.warnings
        else:
            warnings += loaded.warnings
    return errors, warnings


MAX_TEMPLATE_BYTES = 4 * 1024 * 1024
"""The largest template read (ARM's own limit for a template is 4 MiB)."""
MAX_DEPTH = 100
"""The deepest nesting of arrays/objects a template may have (real templates stay far below)."""


def read_json_file(path: Path) -> Any:
    """Parse a JSON template file; anything else (a FIFO, a device, a folder, over 4 MiB, not UTF-8, not JSON, too
    deep, a number too long) is a :class:`UsageError`/:class:`TemplateError` with one line, never a traceback."""
    try:
        # O_NONBLOCK: a FIFO put in place of the file cannot block the open; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"cannot read {path}: not a regular file (a template is a JSON file)")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_TEMPLATE_BYTES:
        raise UsageError(f"{path} is larger than 4 MiB, the largest template ARM accepts")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TemplateError([Issue("", f"not UTF-8 text: {exc.reason} at byte {exc.start}")]) from None
    return parse_json_text(text)


def parse_json_text(text: str) -> Any:
    """``json.loads`` whose every failure is a one-line :class:`TemplateError` (syntax, nesting, huge numbers)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError([Issue("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]) from None
    except RecursionError:
        raise TemplateError([Issue("", f"JSON nested deeper than {MAX_DEPTH} levels")]) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise TemplateError([Issue("", f"invalid JSON value: {str(exc).split(';')[0]}")]) from None
    _check_depth(doc)
    return doc


def _check_depth(doc: Any) -> None:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise TemplateError([Issue("", f"JSON nested deeper than {MAX_DEPTH} levels")])
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
