"""The build request that crosses the wire: the template document, the effective options, input digests and
routing. No file content and no credentials travel in it (Temporal payloads are limited to 2 MB).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio

from aib_sdk.artifact_store import open_artifact_store
from aib_sdk.builder.plan import Plan, TemplateInput, make_plan
from aib_sdk.errors import UsageError
from aib_sdk.models.loader import read_json_file
from aib_sdk.options import BuildOptions
from aib_sdk.profiles import apply_profile_options
from aib_sdk.staging import new_run_id

from .capabilities import activity_queue, build_needs
from .inputs import InputFile, step_uris, upload_inputs
from .settings import TemporalSettings

_LOCAL = ("file", "")
MAX_REQUEST_BYTES = 1_500_000
"""Below Temporal's 2 MB payload limit, leaving room for the envelope."""


def _is_file_uri(value: str) -> bool:
    return urlparse(value).scheme.lower() == "file"


async def _document(template: TemplateInput) -> dict[str, Any]:
    if isinstance(template, str | Path):
        doc = await anyio.to_thread.run_sync(read_json_file, Path(template).expanduser())
    elif isinstance(template, Mapping):
        doc = dict(template)
    else:
        raise UsageError("a remote build takes a template file or document, not a loaded template")
    if not isinstance(doc, dict):
        raise UsageError("the template must be a JSON object")
    return doc


async def make_request(
    template: TemplateInput, options: BuildOptions, settings: TemporalSettings
) -> tuple[dict[str, Any], Plan]:
    """Plan the build here (template errors surface before anything is sent), upload its local inputs, and return
    the request the workflow runs with."""
    if options.resume:
        raise UsageError("--resume continues a run on this machine; it does not apply to a remote build")
    plan = await make_plan(template, options)
    effective, rewrite = apply_profile_options(options, plan.config)
    document = await _document(template)
    source: dict[str, Any] | None = None
    spec = plan.source_spec.model_dump(by_alias=True, exclude_none=True)
    if effective.source is not None or _is_file_uri(str(spec.get("uri", ""))):
        source = spec  # the resolved source (a --source path became a DiskImage spec)
    store = open_artifact_store(settings.artifact_store, plan.plugins, plan.config) if settings.artifact_store else None
    inputs = await upload_inputs(
        store,
        step_uris([s.spec for s in [*plan.steps, *plan.validations]]),
        str(source["uri"]) if source and isinstance(source.get("uri"), str) else None,
        plan.options.uri_map,
        plan.base_directory,
    )
    needs = build_needs(plan)
    request: dict[str, Any] = {
        "runId": options.run_id or new_run_id(),
        "templateName": plan.name,
        "document": document,
        "params": dict(plan.options.params),
        "profile": rewrite,
        "resource": options.resource,
        "timeout": plan.timeout,
        "requestedTimeout": effective.timeout,
        "buildHost": effective.build_host,
        "createMissing": effective.create_missing,
        "trustOnFirstUse": effective.trust_on_first_use,
        "maxParallelTargets": effective.max_parallel_targets,
        "cache": effective.cache,
        "ramState": effective.ram_state,
        "source": source,
        "uriMap": {k: v for k, v in plan.options.uri_map.items() if not _is_file_uri(v)},
        "inputs": [item.to_json() for item in inputs],
        "needs": sorted(needs),
        "activityQueue": activity_queue(settings.task_queue, needs),
        "heartbeatTimeout": settings.heartbeat_timeout,
        "maxAttempts": 3,
    }
    size = len(json.dumps(request, default=str))
    if size > MAX_REQUEST_BYTES:
        raise UsageError(f"the build request is {size} bytes; Temporal takes at most {MAX_REQUEST_BYTES}")
    return request, plan


def options_from_request(
    request: Mapping[str, Any], local_inputs: Mapping[str, Path], base: BuildOptions
) -> BuildOptions:
    """The worker's :class:`BuildOptions` for ``request``: its own plugins and config (in ``base``), every input
    pointed at the verified local copy."""
    # Only the uploaded inputs may point at this machine's files: a request cannot map a URI to a local path,
    # and local paths it names otherwise fall outside the build context (the inputs folder) and are refused.
    uri_map = {k: v for k, v in (request.get("uriMap") or {}).items() if urlparse(str(v)).scheme.lower() not in _LOCAL}
    source = request.get("source")
    source_sent = False
    for item in (InputFile.from_json(i) for i in request.get("inputs") or []):
        local = local_inputs[item.sha256].as_uri()
        if item.role == "source" and isinstance(source, dict):
            source, source_sent = {**source, "uri": local}, True
        else:
            uri_map[item.uri] = local
    local_source = isinstance(source, dict) and urlparse(str(source.get("uri", ""))).scheme.lower() == "file"
    if local_source and not source_sent:
        raise UsageError("the build's source is a local file that was not sent with it (through the artifact store)")
    return dataclasses.replace(
        base,
        params=dict(request.get("params") or {}),
        profile=request.get("profile"),
        source=source,
        uri_map=uri_map,
        timeout=request.get("requestedTimeout"),
        resource=request.get("resource"),
        template_name=request.get("templateName"),
        build_host=request.get("buildHost"),
        create_missing=bool(request.get("createMissing")),
        trust_on_first_use=bool(request.get("trustOnFirstUse")),
        max_parallel_targets=int(request.get("maxParallelTargets") or 8),
        cache=bool(request.get("cache", True)),
        ram_state=bool(request.get("ramState", True)),
        run_id=str(request["runId"]),
    )
