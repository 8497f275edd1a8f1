"""AIB properties a local build cannot honour: one warning each, naming the path and what happens instead.

Everything else in the template is honoured (or honoured differently, see docs/aib-compatibility.md); nothing is
ignored in silence. The warnings appear in ``aib validate`` (stderr) and as ``WarningEvent`` events of a build.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aib_sdk.errors import Issue
from aib_sdk.models.arm import join_path

LOCAL_PREFIX = "/subscriptions/local/"

IDENTITY = "not used locally: the build reads sources and writes targets with the operator's own access"
TAGS = "not applied locally: there is no template resource (managedResourceTags and artifactTags are recorded)"
USER_IDENTITIES = (
    "not applicable locally: the build VM gets no managed identity (no IMDS token endpoint); scripts that fetch "
    "tokens with it fail, so give them credentials another way"
)
CONTAINER_SUBNET = (
    "not applicable locally: no container instance runs the build (this host does); the build VM's network "
    "comes from [qemu] network / [qemu.networks]"
)
PROXY_VM = "not applicable locally: no proxy VM is deployed; the host reaches the build VM through a 127.0.0.1 forward"
PLAN_INFO = "not applicable locally: no Marketplace plan is accepted or attached; the source image is used as is"
AUTO_RUN = (
    "not applicable locally: Azure runs the build when the template is created or updated; a local build runs "
    "only when started (aib build)"
)
WORKLOAD_WITHOUT_SCRIPT = "workload optimization is enabled but names no scriptUri: nothing runs in that phase"
STORAGE_TYPE = (
    "recorded in the local gallery's version manifest; local replicas are files (no storage account type applies)"
)


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _set(value: Any) -> bool:
    return value not in (None, "", [], {})


def local_warnings(
    envelope: Mapping[str, Any] | None, props: Mapping[str, Any], *, resource: str, prefix: str
) -> list[Issue]:
    """Warnings for the properties of one template that a local build cannot honour.

    ``envelope`` is the resource (``None`` for a bare properties object); ``resource``/``prefix`` are the JSON paths
    of the resource and of its ``properties``.
    """
    out: list[Issue] = []

    def warn(path: str, message: str) -> None:
        out.append(Issue(path, message, "warning"))

    def at(*keys: str | int) -> str:
        path = prefix
        for key in keys:
            path = join_path(path, key)
        return path

    if envelope is not None:
        if _set(envelope.get("identity")) and _get(envelope, "identity", "type") != "None":
            warn(join_path(resource, "identity"), IDENTITY)
        if _set(envelope.get("tags")):
            warn(join_path(resource, "tags"), TAGS)
    if _set(_get(props, "vmProfile", "userAssignedIdentities")):
        warn(at("vmProfile", "userAssignedIdentities"), USER_IDENTITIES)
    if _set(_get(props, "vmProfile", "vnetConfig", "containerInstanceSubnetId")):
        warn(at("vmProfile", "vnetConfig", "containerInstanceSubnetId"), CONTAINER_SUBNET)
    if _set(_get(props, "vmProfile", "vnetConfig", "proxyVmSize")):
        warn(at("vmProfile", "vnetConfig", "proxyVmSize"), PROXY_VM)
    if _set(_get(props, "source", "planInfo")):
        warn(at("source", "planInfo"), PLAN_INFO)
    if _get(props, "autoRun", "state") == "Enabled":
        warn(at("autoRun"), AUTO_RUN)
    workload = _get(props, "optimize", "workload")
    if (
        isinstance(workload, Mapping)
        and workload.get("state", "Enabled") == "Enabled"
        and not workload.get("scriptUri")
    ):
        warn(at("optimize", "workload"), WORKLOAD_WITHOUT_SCRIPT)
    distribute = props.get("distribute")
    for index, target in enumerate(distribute if isinstance(distribute, list) else []):
        if not isinstance(target, Mapping) or target.get("type") != "SharedImage":
            continue
        if not str(target.get("galleryImageId", "")).lower().startswith(LOCAL_PREFIX):
            continue  # Azure galleries honour storage account types
        if _set(target.get("storageAccountType")):
            warn(at("distribute", index, "storageAccountType"), STORAGE_TYPE)
        regions = target.get("targetRegions")
        for number, region in enumerate(regions if isinstance(regions, list) else []):
            if isinstance(region, Mapping) and _set(region.get("storageAccountType")):
                warn(at("distribute", index, "targetRegions", number, "storageAccountType"), STORAGE_TYPE)
    return out
