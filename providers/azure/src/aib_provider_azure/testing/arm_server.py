"""An ARM test server: a test server, not Azure.

Real HTTP on 127.0.0.1 (``http.server`` in a background thread) holding Microsoft.Compute resources in memory:
managed images, galleries, gallery image definitions and versions (with per-region replication that advances on
every poll), and managed disks with ``beginGetAccess``/``endGetAccess``. Long-running operations answer ``201``/``202``
with ``Azure-AsyncOperation`` (and ``Retry-After``) as ARM does. Request bodies are checked against the published
API shapes (required properties, allowed values, no unknown properties) and rejected with ARM's
``400 {"error": {"code", "message"}}``. Throttling (``429`` + ``Retry-After``), transient failures and per-region
replication failures can be switched on by tests.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

_RESOURCE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/(?P<rest>.+)$", re.I
)
_OPERATION = re.compile(r"^/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/operations/(?P<id>[^/]+)$", re.I)
_PLATFORM_VERSIONS = re.compile(
    r"^/subscriptions/[^/]+/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/publishers/(?P<pub>[^/]+)/"
    r"artifacttypes/vmimage/offers/(?P<offer>[^/]+)/skus/(?P<sku>[^/]+)/versions(?:/(?P<version>[^/]+))?$",
    re.I,
)
_STORAGE_TYPES = {"Standard_LRS", "Standard_ZRS", "Premium_LRS", "PremiumV2_LRS"}


class ArmRequestError(Exception):
    """Answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Injected:
    """A failure to answer instead of handling the next matching requests."""

    status: int
    code: str
    message: str
    method: str | None = None
    path_contains: str | None = None
    count: int = 1
    retry_after: int | None = None


@dataclass
class Operation:
    resource_id: str
    kind: str  # "create" | "replicate" | "delete" | "action"
    polls_left: int
    output: Any = None


@dataclass
class ArmState:
    """Everything the server holds; tests read and tweak it (under :attr:`lock`)."""

    token: str | None = None
    lro_polls: int = 1
    lro_header: str = "Azure-AsyncOperation"
    """Which header long-running operations answer with: ``Azure-AsyncOperation`` or ``Location``."""
    retry_after: int = 0
    replication_polls: int = 2
    fail_regions: set[str] = field(default_factory=set)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    injected: list[Injected] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    platform_images: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)
    """(publisher, offer, sku) lower-cased → version → the blob URI holding that image's VHD."""
    export_sas: Callable[[str], str] | None = None
    """Turns a source blob URI into the read SAS URL that ``beginGetAccess`` hands out."""
    lock: threading.RLock = field(default_factory=threading.RLock)


def _require(obj: Any, key: str, path: str, kind: type | tuple[type, ...] = str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ArmRequestError(400, "InvalidParameter", f"Required parameter '{path}.{key}' is missing (null).")
    value = obj[key]
    if not isinstance(value, kind):
        raise ArmRequestError(400, "InvalidParameter", f"Parameter '{path}.{key}' has an invalid type.")
    return value


def _only(obj: dict[str, Any], allowed: set[str], path: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ArmRequestError(
            400,
            "InvalidRequestContent",
            f"The request content was invalid and could not be deserialized: Could not find member '{unknown[0]}' "
            f"on object of type '{path}'.",
        )


def _enum(value: Any, allowed: set[str], path: str) -> None:
    if value not in allowed:
        raise ArmRequestError(
            400, "InvalidParameter", f"The value '{value}' of parameter '{path}' is not allowed: {sorted(allowed)}."
        )


def validate_image(body: dict[str, Any]) -> None:
    """Microsoft.Compute/images PUT: location, storageProfile.osDisk{osType, osState, blobUri|managedDisk|snapshot}."""
    _only(body, {"location", "tags", "properties", "extendedLocation"}, "Image")
    _require(body, "location", "")
    props = _require(body, "properties", "", dict)
    _only(props, {"storageProfile", "hyperVGeneration", "sourceVirtualMachine"}, "ImageProperties")
    _enum(_require(props, "hyperVGeneration", "properties"), {"V1", "V2"}, "properties.hyperVGeneration")
    storage = _require(props, "storageProfile", "properties", dict)
    _only(storage, {"osDisk", "dataDisks", "zoneResilient"}, "ImageStorageProfile")
    os_disk = _require(storage, "osDisk", "properties.storageProfile", dict)
    _only(
        os_disk,
        {
            "osType",
            "osState",
            "blobUri",
            "managedDisk",
            "snapshot",
            "caching",
            "diskSizeGB",
            "storageAccountType",
            "diskEncryptionSet",
        },
        "ImageOSDisk",
    )
    _enum(_require(os_disk, "osType", "properties.storageProfile.osDisk"), {"Linux", "Windows"}, "osDisk.osType")
    _enum(
        _require(os_disk, "osState", "properties.storageProfile.osDisk"),
        {"Generalized", "Specialized"},
        "osDisk.osState",
    )
    if not any(os_disk.get(k) for k in ("blobUri", "managedDisk", "snapshot")):
        raise ArmRequestError(
            400, "InvalidParameter", "One of 'blobUri', 'managedDisk' or 'snapshot' is required for the OS disk."
        )


def validate_version(body: dict[str, Any]) -> None:
    """Gallery image version PUT: publishingProfile{targetRegions[…], excludeFromLatest, replicationMode}, source."""
    _only(body, {"location", "tags", "properties"}, "GalleryImageVersion")
    _require(body, "location", "")
    props = _require(body, "properties", "", dict)
    _only(
        props,
        {"publishingProfile", "storageProfile", "safetyProfile", "securityProfile"},
        "GalleryImageVersionProperties",
    )
    pub = _require(props, "publishingProfile", "properties", dict)
    _only(
        pub,
        {
            "targetRegions",
            "excludeFromLatest",
            "replicationMode",
            "replicaCount",
            "storageAccountType",
            "endOfLifeDate",
            "targetExtendedLocations",
        },
        "GalleryImageVersionPublishingProfile",
    )
    regions = _require(pub, "targetRegions", "properties.publishingProfile", list)
    if not regions:
        raise ArmRequestError(400, "InvalidParameter", "properties.publishingProfile.targetRegions is empty.")
    for i, region in enumerate(regions):
        path = f"properties.publishingProfile.targetRegions[{i}]"
        if not isinstance(region, dict):
            raise ArmRequestError(400, "InvalidParameter", f"{path} must be an object.")
        _only(
            region,
            {"name", "regionalReplicaCount", "storageAccountType", "encryption", "excludeFromLatest"},
            "TargetRegion",
        )
        _require(region, "name", path)
        count = region.get("regionalReplicaCount", 1)
        if not isinstance(count, int) or not 1 <= count <= 100:
            raise ArmRequestError(400, "InvalidParameter", f"{path}.regionalReplicaCount must be 1 to 100.")
        if "storageAccountType" in region:
            _enum(region["storageAccountType"], _STORAGE_TYPES, f"{path}.storageAccountType")
    if "excludeFromLatest" in pub and not isinstance(pub["excludeFromLatest"], bool):
        raise ArmRequestError(400, "InvalidParameter", "publishingProfile.excludeFromLatest must be a boolean.")
    if "replicationMode" in pub:
        _enum(pub["replicationMode"], {"Full", "Shallow"}, "publishingProfile.replicationMode")
    storage = _require(props, "storageProfile", "properties", dict)
    _only(storage, {"source", "osDiskImage", "dataDiskImages"}, "GalleryImageVersionStorageProfile")
    source_ok = isinstance(storage.get("source"), dict) and bool(storage["source"].get("id"))
    os_image = storage.get("osDiskImage")
    if isinstance(os_image, dict):
        _only(os_image, {"source", "hostCaching"}, "GalleryOSDiskImage")
        src = os_image.get("source")
        if isinstance(src, dict):
            _only(src, {"uri", "id", "storageAccountId"}, "GalleryDiskImageSource")
            source_ok = source_ok or bool(src.get("uri") or src.get("id"))
    if not source_ok:
        raise ArmRequestError(
            400,
            "InvalidParameter",
            "storageProfile.osDiskImage.source.uri or .id (or storageProfile.source.id) is required.",
        )


def validate_definition(body: dict[str, Any]) -> None:
    """Gallery image definition PUT: osType, osState, identifier{publisher, offer, sku}."""
    _only(body, {"location", "tags", "properties"}, "GalleryImage")
    _require(body, "location", "")
    props = _require(body, "properties", "", dict)
    _enum(_require(props, "osType", "properties"), {"Linux", "Windows"}, "properties.osType")
    _enum(_require(props, "osState", "properties"), {"Generalized", "Specialized"}, "properties.osState")
    ident = _require(props, "identifier", "properties", dict)
    for key in ("publisher", "offer", "sku"):
        _require(ident, key, "properties.identifier")
    if "hyperVGeneration" in props:
        _enum(props["hyperVGeneration"], {"V1", "V2"}, "properties.hyperVGeneration")


def _segments(rest: str) -> list[tuple[str, str]]:
    parts = rest.split("/")
    return [(parts[i].lower(), parts[i + 1]) for i in range(0, len(parts) - 1, 2)]


class ArmTestServer:
    """The server; use :func:`run_arm_server`. ``state`` is shared with the handler threads."""

    def __init__(self, state: ArmState, tls: ssl.SSLContext | None = None) -> None:
        self.state = state
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"

    # --- test controls ------------------------------------------------------------------------------------------
    def throttle(self, count: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``count`` requests with 429 and ``Retry-After``."""
        self.inject(429, "TooManyRequests", "Rate limit exceeded.", count=count, retry_after=retry_after)

    def inject(
        self,
        status: int,
        code: str,
        message: str,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        count: int = 1,
        retry_after: int | None = None,
    ) -> None:
        with self.state.lock:
            self.state.injected.append(Injected(status, code, message, method, path_contains, count, retry_after))

    def resource(self, resource_id: str) -> dict[str, Any] | None:
        with self.state.lock:
            return self.state.resources.get(resource_id.lower())

    def add(self, resource_id: str, body: dict[str, Any]) -> None:
        """Create a resource directly (for setting up galleries and definitions)."""
        with self.state.lock:
            self.state.resources[resource_id.lower()] = {
                "id": resource_id,
                "name": resource_id.rsplit("/", 1)[-1],
                **body,
                "properties": {**body.get("properties", {}), "provisioningState": "Succeeded"},
            }

    # --- request handling ---------------------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], Any]:
        url = urlparse(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        state = self.state
        with state.lock:
            state.requests.append((method, url.path))
            for inj in state.injected:
                if (
                    inj.count > 0
                    and (inj.method in (None, method))
                    and (inj.path_contains is None or inj.path_contains.lower() in url.path.lower())
                ):
                    inj.count -= 1
                    extra = {"Retry-After": str(inj.retry_after)} if inj.retry_after is not None else {}
                    return inj.status, extra, {"error": {"code": inj.code, "message": inj.message}}
            if state.token is not None and headers.get("authorization") != f"Bearer {state.token}":
                error = {"code": "AuthenticationFailed", "message": "Bearer token missing or invalid."}
                return 401, {}, {"error": error}
            try:
                if method == "PUT" and headers.get("if-none-match") == "*" and url.path.lower() in state.resources:
                    # Conditional create, as ARM honours it: the resource exists, nothing is changed.
                    return 412, {}, {"error": {"code": "PreconditionFailed", "message": f"{url.path} exists."}}
                return self._route(method, url.path, query, raw)
            except ArmRequestError as exc:
                return exc.status, {}, {"error": {"code": exc.code, "message": exc.message}}

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], Any]:
        op = _OPERATION.match(path)
        if op:
            return self._operation(op["id"])
        if "api-version" not in query:
            raise ArmRequestError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        platform = _PLATFORM_VERSIONS.match(path)
        if platform and method == "GET":
            return self._platform(path, platform)
        match = _RESOURCE.match(path)
        if not match:
            raise ArmRequestError(404, "InvalidResourceType", f"No route for {path}.")
        parts = match["rest"].split("/")
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise ArmRequestError(400, "InvalidRequestContent", f"The request content was invalid: {exc}") from exc
        if len(parts) % 2 == 1:  # a collection (GET) or an action (POST)
            owner = path.rsplit("/", 1)[0]
            if method == "POST":
                return self._action(owner, tuple(k for k, _ in _segments("/".join(parts[:-1]))), parts[-1], body)
            if method == "GET":
                return self._list(path)
            raise ArmRequestError(405, "MethodNotAllowed", f"{method} is not allowed on a collection.")
        kinds = tuple(k for k, _ in _segments(match["rest"]))
        if method == "GET":
            return self._get(path, query)
        if method == "PUT":
            return self._put(path, kinds, body)
        if method == "DELETE":
            return self._delete(path)
        raise ArmRequestError(405, "MethodNotAllowed", f"{method} is not supported here.")

    def _list(self, collection: str) -> tuple[int, dict[str, str], Any]:
        parent = collection.rsplit("/", 1)[0].lower()
        if parent.count("/") > 6 and parent not in self.state.resources:
            raise ArmRequestError(404, "ParentResourceNotFound", f"Parent resource '{parent}' not found.")
        prefix = collection.lower() + "/"
        items = [r for k, r in self.state.resources.items() if k.startswith(prefix) and "/" not in k[len(prefix) :]]
        return 200, {}, {"value": [self._view(r, expand=False) for r in items]}

    def _get(self, rid: str, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        found = self.state.resources.get(rid.lower())
        if found is None:
            raise ArmRequestError(404, "ResourceNotFound", f"The Resource '{rid}' was not found.")
        expand = query.get("$expand", "").lower() == "replicationstatus"
        return 200, {}, self._view(found, expand=expand)

    def _view(self, resource: dict[str, Any], *, expand: bool) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(json.dumps({k: v for k, v in resource.items() if not k.startswith("_")}))
        replication = resource.get("_replication")
        if replication is not None and expand:
            summary = [dict(r) for r in replication]
            states = {r["state"] for r in summary}
            aggregated = "Failed" if "Failed" in states else ("Completed" if states == {"Completed"} else "InProgress")
            out["properties"]["replicationStatus"] = {"aggregatedState": aggregated, "summary": summary}
        return out

    def _parent_check(self, rid: str, kinds: tuple[str, ...]) -> dict[str, Any] | None:
        if len(kinds) < 2:
            return None
        parent = rid.rsplit("/", 2)[0]
        found = self.state.resources.get(parent.lower())
        if found is None:
            raise ArmRequestError(
                404,
                "ParentResourceNotFound",
                f"Can not perform requested operation on nested resource. Parent resource "
                f"'{parent.rsplit('/', 1)[-1]}' not found.",
            )
        return found

    def _put(self, rid: str, kinds: tuple[str, ...], body: Any) -> tuple[int, dict[str, str], Any]:
        if not isinstance(body, dict):
            raise ArmRequestError(400, "InvalidRequestContent", "The request content must be a JSON object.")
        parent = self._parent_check(rid, kinds)
        if kinds == ("images",):
            validate_image(body)
        elif kinds == ("galleries",):
            _only(body, {"location", "tags", "properties"}, "Gallery")
            _require(body, "location", "")
        elif kinds == ("galleries", "images"):
            validate_definition(body)
        elif kinds == ("galleries", "images", "versions"):
            validate_version(body)
            assert parent is not None
            if str(body["location"]).lower() != str(parent.get("location", "")).lower():
                raise ArmRequestError(
                    400, "InvalidParameter", "The gallery image version must be in the location of its gallery image."
                )
        elif kinds == ("disks",):
            _only(body, {"location", "tags", "properties", "sku", "zones"}, "Disk")
            _require(body, "location", "")
            export = self._disk_source(_require(body, "properties", "", dict))
        else:
            raise ArmRequestError(400, "InvalidResourceType", f"Unsupported resource type {'/'.join(kinds)}.")
        existed = rid.lower() in self.state.resources
        resource = {
            "id": rid,
            "name": rid.rsplit("/", 1)[-1],
            "type": "Microsoft.Compute/" + "/".join(kinds),
            **body,
            "properties": {**body.get("properties", {}), "provisioningState": "Creating"},
        }
        if kinds == ("disks",):
            resource["_export_url"] = export
        if kinds == ("galleries", "images", "versions"):
            regions = body["properties"]["publishingProfile"]["targetRegions"]
            resource["_replication"] = [
                {"region": r["name"], "state": "Replicating", "details": "", "progress": 0} for r in regions
            ]
            kind, polls = "replicate", self.state.replication_polls
        else:
            kind, polls = "create", self.state.lro_polls
        if polls <= 0 and kind == "create":
            resource["properties"]["provisioningState"] = "Succeeded"
            self.state.resources[rid.lower()] = resource
            return (200 if existed else 201), {}, self._view(resource, expand=False)
        self.state.resources[rid.lower()] = resource
        return (200 if existed else 201), self._start(rid, kind, polls), self._view(resource, expand=False)

    def _platform(self, path: str, platform: re.Match[str]) -> tuple[int, dict[str, str], Any]:
        key = (platform["pub"].lower(), platform["offer"].lower(), platform["sku"].lower())
        versions = self.state.platform_images.get(key, {})
        if platform["version"]:
            if platform["version"] not in versions:
                raise ArmRequestError(404, "ImageVersionNotFound", "The platform image version was not found.")
            return 200, {}, {"name": platform["version"], "location": platform["loc"], "id": path}
        return 200, {}, [{"name": v, "location": platform["loc"], "id": f"{path}/{v}"} for v in versions]

    def _disk_source(self, props: dict[str, Any]) -> str:
        """Check a disk's ``creationData`` and find the blob its content comes from."""
        _only(props, {"creationData", "diskSizeGB", "osType", "hyperVGeneration"}, "DiskProperties")
        creation = _require(props, "creationData", "properties", dict)
        _only(
            creation,
            {"createOption", "imageReference", "galleryImageReference", "sourceUri", "storageAccountId"},
            "CreationData",
        )
        option = _require(creation, "createOption", "properties.creationData")
        _enum(option, {"FromImage", "Import", "Empty"}, "properties.creationData.createOption")
        if option != "FromImage":
            return str(creation.get("sourceUri", ""))
        ref = creation.get("galleryImageReference") or creation.get("imageReference")
        if not isinstance(ref, dict) or not ref.get("id"):
            raise ArmRequestError(
                400, "InvalidParameter", "FromImage needs imageReference.id or galleryImageReference.id."
            )
        source_id = str(ref["id"])
        platform = _PLATFORM_VERSIONS.match(source_id)
        uri: Any = None
        if platform:
            key = (platform["pub"].lower(), platform["offer"].lower(), platform["sku"].lower())
            uri = self.state.platform_images.get(key, {}).get(platform["version"] or "")
        else:
            found = self.state.resources.get(source_id.lower())
            storage = (found or {}).get("properties", {}).get("storageProfile", {})
            uri = storage.get("osDisk", {}).get("blobUri") or storage.get("osDiskImage", {}).get("source", {}).get(
                "uri"
            )
        if not uri:
            raise ArmRequestError(404, "NotFound", f"The image '{source_id}' was not found.")
        return self.state.export_sas(str(uri)) if self.state.export_sas else str(uri)

    def _start(self, rid: str, kind: str, polls: int, output: Any = None) -> dict[str, str]:
        op_id = uuid.uuid4().hex
        self.state.operations[op_id] = Operation(rid, kind, polls, output)
        url = f"{self.url}/providers/Microsoft.Compute/locations/local/operations/{op_id}?api-version=2024-03-02"
        return {self.state.lro_header: url, "Retry-After": str(self.state.retry_after)}

    def _delete(self, rid: str) -> tuple[int, dict[str, str], Any]:
        if self.state.resources.pop(rid.lower(), None) is None:
            return 204, {}, None
        prefix = rid.lower() + "/"
        for key in [k for k in self.state.resources if k.startswith(prefix)]:
            del self.state.resources[key]
        return 202, self._start(rid, "delete", self.state.lro_polls), None

    def _action(self, rid: str, kinds: tuple[str, ...], action: str, body: Any) -> tuple[int, dict[str, str], Any]:
        disk = self.state.resources.get(rid.lower())
        if kinds != ("disks",) or disk is None:
            raise ArmRequestError(404, "ResourceNotFound", f"The Resource '{rid}' was not found.")
        if action.lower() == "begingetaccess":
            if not isinstance(body, dict) or body.get("access") not in ("Read", "Write"):
                raise ArmRequestError(400, "InvalidParameter", "access must be Read or Write.")
            _require(body, "durationInSeconds", "", int)
            sas = disk.get("_export_url", "")
            disk["properties"]["diskState"] = "ActiveSAS"
            return 202, self._start(rid, "action", self.state.lro_polls, {"accessSAS": sas}), None
        if action.lower() == "endgetaccess":
            disk["properties"]["diskState"] = "Unattached"
            return 202, self._start(rid, "action", self.state.lro_polls), None
        raise ArmRequestError(404, "InvalidAction", f"Unknown action {action}.")

    def _operation(self, op_id: str) -> tuple[int, dict[str, str], Any]:
        status, headers, body = self._operation_status(op_id)
        if self.state.lro_header.lower() != "location":
            return status, headers, body
        # Location polling: 202 while running; then the result (200/204) or the error with its own status.
        state = str(body.get("status", "")) if isinstance(body, dict) else ""
        if state == "InProgress":
            return 202, headers, None
        if state == "Failed":
            return 400, {}, {"error": body.get("error", {})}
        output = body.get("properties", {}).get("output") if isinstance(body, dict) else None
        return (200, {}, output) if output is not None else (204, {}, None)

    def _operation_status(self, op_id: str) -> tuple[int, dict[str, str], Any]:
        op = self.state.operations.get(op_id)
        if op is None:
            raise ArmRequestError(404, "OperationNotFound", "Operation not found.")
        headers = {"Retry-After": str(self.state.retry_after)}
        resource = self.state.resources.get(op.resource_id.lower())
        if op.kind == "replicate" and resource is not None:
            status = self._advance_replication(resource)
            if status == "Failed":
                failed = [r["region"] for r in resource["_replication"] if r["state"] == "Failed"]
                return (
                    200,
                    headers,
                    {
                        "status": "Failed",
                        "error": {
                            "code": "ReplicationFailed",
                            "message": f"Replication failed in this region(s): {', '.join(repr(f) for f in failed)}.",
                        },
                    },
                )
            return 200, headers, {"status": status}
        op.polls_left -= 1
        if op.polls_left > 0:
            return 200, headers, {"status": "InProgress"}
        if resource is not None and op.kind == "create":
            resource["properties"]["provisioningState"] = "Succeeded"
        out: dict[str, Any] = {"status": "Succeeded"}
        if op.output is not None:
            out["properties"] = {"output": op.output}
        return 200, headers, out

    def _advance_replication(self, resource: dict[str, Any]) -> str:
        step = max(1, 100 // max(1, self.state.replication_polls))
        for region in resource["_replication"]:
            if region["state"] != "Replicating":
                continue
            if region["region"].lower() in {r.lower() for r in self.state.fail_regions}:
                region["state"], region["details"] = "Failed", "Replication of the image failed in this region."
                continue
            region["progress"] = min(100, region["progress"] + step)
            if region["progress"] >= 100:
                region["state"] = "Completed"
        states = {r["state"] for r in resource["_replication"]}
        if "Replicating" in states:
            return "InProgress"
        final = "Failed" if "Failed" in states else "Succeeded"
        resource["properties"]["provisioningState"] = final
        return final


def _handler_for(server: ArmTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, body = server.handle(self.command, self.path, headers, raw)
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-ms-request-id", uuid.uuid4().hex)
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _serve

    return Handler


@contextmanager
def run_arm_server(state: ArmState | None = None, *, tls: ssl.SSLContext | None = None) -> Iterator[ArmTestServer]:
    """Serve on ``127.0.0.1:<free port>`` in a thread until the context exits (HTTPS when ``tls`` is given)."""
    server = ArmTestServer(state or ArmState(), tls)
    thread = threading.Thread(target=server.httpd.serve_forever, args=(0.05,), name="arm-test-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(5)
