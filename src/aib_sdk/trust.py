"""What a template may reach: the trust rules of a build, in one place (see ``docs/security.md``).

A template is untrusted input (a published sample, a teammate's pull request); the operator (command line,
``aib.toml``, environment) is trusted. Every rule here is checked when the run is planned, before any VM boots,
and a refusal is a :class:`~aib_sdk.errors.UsageError` (exit 1) naming the value and the setting that allows it.

- **Build context.** ``file://`` URIs and plain paths a template names (``scriptUri``, ``sourceUri``, the source's
  ``uri``/``kernel``/``initrd``, validation scripts, ``optimize.workload.scriptUri``) must resolve, symlinks
  followed, inside the context folder: the template's folder, or ``--context DIR``. URIs rewritten by
  ``--map-uri`` and a ``--source`` the operator gave are trusted and not checked.
- **Local outputs.** A ``file://`` output never replaces an existing file unless an earlier run of the same target
  (template name + ``runOutputName``) wrote it and it is unchanged since; a registry under
  ``AIB_HOME/outputs`` remembers what each target wrote.
- **Endpoints.** A template may send the operator's credentials only to an endpoint that is the provider's public
  default or one the operator configured (:func:`check_endpoint`); plain ``http`` only when configured so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pydantic import BaseModel

from aib_sdk.config import Config
from aib_sdk.errors import UsageError

# Build context --------------------------------------------------------------------------------------------------

_LOCAL_SCHEMES = ("", "file")
_SOURCE_PATH_KEYS = ("uri", "kernel", "initrd")


def _is_local(value: str) -> bool:
    scheme = urlparse(value).scheme.lower()
    # A one-letter "scheme" is a Windows drive (C:\…), still a local path.
    return scheme in _LOCAL_SCHEMES or len(scheme) == 1


def _as_path(value: str, base: Path) -> Path:
    parsed = urlparse(value)
    if parsed.scheme.lower() == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UsageError(f"not a local file URI: {value!r} (expected file:///absolute/path)")
        return Path(unquote(parsed.path))
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def confine(value: str, *, where: str, context: Path, base: Path | None = None) -> Path:
    """The local path ``value`` names (relative to ``base``, default the context), refused outside ``context``.

    Symlinks are followed, so a link inside the context that points outside it is refused too.
    """
    root = context.resolve()
    path = _as_path(value, base or root).resolve()
    if not path.is_relative_to(root):
        raise UsageError(
            f"{where}: {value!r} is outside the build context {root}; a template may only read files under its "
            "own folder (give --context DIR to widen it, or map the URI with --map-uri PREFIX=DIR)"
        )
    return path


def template_inputs(properties: Any, *, include_source: bool = True) -> Iterator[tuple[str, str]]:
    """``(json path, value)`` of every URI or path a template names as an input (not its outputs)."""
    if include_source:
        source = _dump(properties.source)
        for key in _SOURCE_PATH_KEYS:
            if isinstance(source.get(key), str):
                yield f"properties.source.{key}", source[key]
    entries: list[tuple[str, Any]] = [
        (f"properties.customize[{i}]", spec) for i, spec in enumerate(properties.customize or [])
    ]
    validation = properties.validation
    if validation is not None:
        entries += [
            (f"properties.validate.inVMValidations[{i}]", spec)
            for i, spec in enumerate(validation.in_vm_validations or [])
        ]
    workload = properties.optimize.workload if properties.optimize else None
    if workload is not None:
        entries.append(("properties.optimize.workload", workload))
    for path, spec in entries:
        for key, value in _dump(spec).items():
            if key.lower().endswith("uri") and isinstance(value, str) and value:
                yield f"{path}.{key}", value


def check_build_context(
    properties: Any,
    *,
    context: Path | None,
    base: Path | None,
    uri_map: Mapping[str, str],
    include_source: bool = True,
) -> None:
    """Refuse every local input of the template outside ``context`` (no context: nothing is confined)."""
    if context is None:
        return
    from aib_sdk.fetch import apply_uri_map

    for where, value in template_inputs(properties, include_source=include_source):
        if apply_uri_map(value.strip(), uri_map) != value.strip():
            continue  # the operator mapped it: trusted
        if _is_local(value):
            confine(value.strip(), where=where, context=context, base=base)


def _dump(spec: Any) -> dict[str, Any]:
    if isinstance(spec, BaseModel):
        return spec.model_dump(by_alias=True, exclude_none=True)
    return dict(spec) if isinstance(spec, Mapping) else {}


# Local outputs --------------------------------------------------------------------------------------------------


def _output_record(home: Path, destination: Path) -> Path:
    key = hashlib.sha256(str(destination).encode()).hexdigest()[:32]
    return home / "outputs" / f"{key}.json"


def _identity(path: Path) -> list[int]:
    st = path.lstat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def check_output_file(home: Path, destination: Path, owner: str) -> None:
    """Refuse to replace ``destination`` unless it is absent or an unchanged earlier output of ``owner``.

    Blocking (small stats and one small read); call it in a worker thread.
    """
    if not os.path.lexists(destination):
        return
    try:
        record = json.loads(_output_record(home, destination).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if (
        isinstance(record, dict)
        and record.get("path") == str(destination)
        and record.get("owner") == owner
        and record.get("identity") == _identity(destination)
    ):
        return
    raise UsageError(
        f"{owner}: {destination} already exists and is not an earlier output of this target; "
        "remove it or choose another uri (a file:// output never replaces other files)"
    )


def record_output_file(home: Path, destination: Path, owner: str) -> None:
    """Remember that ``owner`` wrote ``destination`` (as it is now), so its next run may replace it."""
    from aib_sdk.private_files import write_private

    record = {"path": str(destination), "owner": owner, "identity": _identity(destination)}
    write_private(_output_record(home, destination), json.dumps(record) + "\n")


def output_owner(template_name: str, run_output_name: str) -> str:
    """The identity of a target across runs: the template's name and the target's ``runOutputName``."""
    return f"{template_name}/{run_output_name}"


# Endpoints ------------------------------------------------------------------------------------------------------

AZURE_BLOB_SUFFIXES = (
    ".blob.core.windows.net",  # public cloud
    ".blob.core.usgovcloudapi.net",  # US Government
    ".blob.core.chinacloudapi.cn",  # China (21Vianet)
    ".blob.core.cloudapi.de",  # Germany (legacy)
)
_AWS_S3_HOST = re.compile(r"^(?:[a-z0-9.-]+\.)?s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com(?:\.cn)?$")
TRUST_SETTING = '[trust] endpoints = ["<scheme>://<host>[:port]"] (or AIB_TRUST_ENDPOINTS)'


class EndpointRefused(UsageError):
    """A template named an endpoint that may not receive the operator's credentials."""


def is_public_azure_blob_host(host: str) -> bool:
    """``<account>.blob.core.windows.net`` or the blob host of another Azure cloud."""
    return host.lower().endswith(AZURE_BLOB_SUFFIXES)


def is_public_s3_host(host: str) -> bool:
    """One of AWS's own S3 endpoints (``s3.amazonaws.com``, ``s3.<region>.amazonaws.com``, dual-stack, FIPS …)."""
    return _AWS_S3_HOST.match(host.lower()) is not None


def allowed_endpoints(config: Config) -> list[str]:
    """The operator's explicit allow-list: ``[trust] endpoints`` (a list) or ``AIB_TRUST_ENDPOINTS`` (comma list)."""
    value = config.get("trust", "endpoints")
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [str(item).strip() for item in items if str(item).strip()]


def _origin(url: str) -> tuple[str, str, int]:
    parsed = urlparse(url.strip())
    scheme = parsed.scheme.lower()
    try:
        port = parsed.port
    except ValueError:
        port = None
    return scheme, (parsed.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def check_endpoint(
    url: str,
    *,
    configured: Iterable[str],
    public: Callable[[str], bool],
    what: str,
    setting: str,
) -> None:
    """Refuse to send credentials to ``url`` unless the operator configured its origin or it is the provider's public
    default over https (plain http only to an endpoint configured as such). The error names the host and the setting
    that would allow it; it is raised before any request is made."""
    scheme, host, port = origin = _origin(url)
    if origin in {_origin(item) for item in configured if item}:
        return
    if scheme == "https" and host and public(host):
        return
    shown = f"{scheme}://{host}" + ("" if port in (80, 443) else f":{port}")
    why = (
        "plain http to an endpoint not configured as such"
        if scheme == "http" and public(host)
        else ("neither the provider's public endpoint nor configured by the operator")
    )
    raise EndpointRefused(
        f"{what}: refusing to send credentials to {shown}: it is {why}; nothing was sent. "
        f"Allow it with {setting} or {TRUST_SETTING.replace('<scheme>://<host>[:port]', shown)}"
    )
