"""Azure sources: export a managed image, a gallery image version or a platform image as a local VHD.

Each export creates a temporary managed disk from the image, asks ``beginGetAccess`` for a read SAS, downloads only
the written page ranges concurrently, then ``endGetAccess`` and deletes the disk (shielded, whatever happened).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import anyio
from pydantic import BaseModel

from aib_provider_azure.arm import COMPUTE_API, GALLERY_API, ArmClient
from aib_provider_azure.distributors.common import safe_name
from aib_provider_azure.download import download_page_blob
from aib_provider_azure.session import AzureSession
from aib_provider_azure.settings import AzureSettings
from aib_sdk.artifacts import DiskImage, HyperVGeneration, OsType
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.disks import check_self_contained
from aib_sdk.errors import DistributeError, SourceError, UsageError
from aib_sdk.models.specs import ManagedImageSource, PlatformImageSource, SharedImageVersionSource
from aib_sdk.routing import is_azure_arm_id, parse_arm_id

DISK_API = "2023-10-02"
LOCAL_PUBLISHERS = frozenset({"debian", "aib-sdk"})  # built locally by the qemu provider
_VERSION = re.compile(r"^\d+(\.\d+)*$")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def latest(versions: list[str]) -> str | None:
    numeric = [v for v in versions if _VERSION.match(v)]
    return max(numeric, key=_version_key) if numeric else None


async def export_disk(
    ctx: RunContext,
    session: AzureSession,
    *,
    subscription: str,
    resource_group: str,
    location: str,
    creation: dict[str, Any],
    label: str,
    os_type: OsType,
    generation: HyperVGeneration,
    exact_version: str | None,
) -> DiskImage:
    """Create a disk from ``creation`` (``creationData``), download it as a VHD, and remove the disk."""
    arm = session.arm
    disk_id = (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/disks/"
        f"aib-export-{safe_name(ctx.run_id)}"
    )
    body = {
        "location": location,
        "sku": {"name": "Standard_LRS"},
        "properties": {"creationData": creation, "osType": os_type, "hyperVGeneration": generation},
    }
    dest = ctx.staging.work / f"source-{safe_name(label)}.vhd"
    created = False
    granted = False
    try:
        created = True
        await arm.put(disk_id, body, DISK_API)
        granted = True
        output = await arm.post(f"{disk_id}/beginGetAccess", DISK_API, {"access": "Read", "durationInSeconds": 14400})
        sas = (output or {}).get("accessSAS") if isinstance(output, dict) else None
        if not sas:
            raise SourceError(f"{label}: beginGetAccess returned no SAS URL")

        def progress(done: int, total: int | None) -> None:
            ctx.progress("download", label, done, total)

        await download_page_blob(
            session.http, sas, dest, concurrency=session.settings.upload_concurrency, on_progress=progress
        )
    except DistributeError as exc:
        raise SourceError(f"{label}: export failed: {exc}") from exc
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(300):
            await _cleanup(ctx, arm, disk_id, created=created, granted=granted)
    # Probed, not read as vpc: a fixed VHD probes as raw (self-contained); anything with a header is checked.
    await check_self_contained(dest, None, what=f"exported Azure disk of {label}")
    return DiskImage(
        path=dest, format="vpc", os_type=os_type, hyper_v_generation=generation, exact_version=exact_version
    )


async def _cleanup(ctx: RunContext, arm: ArmClient, disk_id: str, *, created: bool, granted: bool) -> None:
    try:
        if granted:
            await arm.post(f"{disk_id}/endGetAccess", DISK_API)
        if created:
            await arm.delete(disk_id, DISK_API)
    except Exception as exc:
        ctx.warn(f"could not remove the temporary export disk {disk_id}: {exc}")


def _os(value: Any) -> OsType:
    return "Windows" if str(value).lower() == "windows" else "Linux"


def _gen(value: Any) -> HyperVGeneration:
    return "V2" if str(value).upper() == "V2" else "V1"


def _export_group(settings_section: dict[str, Any], default: str) -> str:
    return str(settings_section.get("export_resource_group") or default)


class AzureManagedImageSource:
    """``ManagedImage`` with a non-local ``imageId``: exported through a temporary disk."""

    type_name: ClassVar[str] = "ManagedImage"
    spec_model: ClassVar[type[BaseModel]] = ManagedImageSource

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        return is_azure_arm_id(getattr(spec, "image_id", None))

    async def resolve(self, spec: BaseModel, ctx: RunContext) -> DiskImage:
        assert isinstance(spec, ManagedImageSource)
        arm_id = parse_arm_id(spec.image_id)
        assert arm_id is not None
        settings = AzureSettings.from_config(ctx.config)
        async with AzureSession(settings, ctx.options.credential) as session:
            try:
                image = await session.arm.get(spec.image_id, COMPUTE_API)
            except DistributeError as exc:
                raise SourceError(str(exc)) from exc
            if image is None:
                raise SourceError(f"managed image {spec.image_id} does not exist")
            os_disk = image.get("properties", {}).get("storageProfile", {}).get("osDisk", {})
            return await export_disk(
                ctx,
                session,
                subscription=arm_id.subscription,
                resource_group=_export_group(ctx.config.section("azure"), arm_id.resource_group),
                location=str(image.get("location", "")),
                creation={"createOption": "FromImage", "imageReference": {"id": spec.image_id}},
                label=arm_id.get("images") or "image",
                os_type=_os(os_disk.get("osType")),
                generation=_gen(image.get("properties", {}).get("hyperVGeneration")),
                exact_version=None,
            )


class AzureSharedImageVersionSource:
    """``SharedImageVersion`` with a non-local id; ``…/versions/latest`` resolves to the newest non-excluded one."""

    type_name: ClassVar[str] = "SharedImageVersion"
    spec_model: ClassVar[type[BaseModel]] = SharedImageVersionSource

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        return is_azure_arm_id(getattr(spec, "image_version_id", None))

    async def resolve(self, spec: BaseModel, ctx: RunContext) -> DiskImage:
        assert isinstance(spec, SharedImageVersionSource)
        arm_id = parse_arm_id(spec.image_version_id)
        kinds = [k.lower() for k, _ in arm_id.segments] if arm_id else []
        if arm_id is None or kinds != ["galleries", "images", "versions"]:
            raise UsageError(
                f"imageVersionId must be …/galleries/<g>/images/<d>/versions/<v|latest>: {spec.image_version_id!r}"
            )
        definition_id = spec.image_version_id.rsplit("/versions/", 1)[0]
        settings = AzureSettings.from_config(ctx.config)
        async with AzureSession(settings, ctx.options.credential) as session:
            try:
                definition = await session.arm.get(definition_id, GALLERY_API)
                if definition is None:
                    raise SourceError(f"gallery image definition {definition_id} does not exist")
                version = arm_id.get("versions") or ""
                if version.lower() == "latest":
                    items = await session.arm.list(f"{definition_id}/versions", GALLERY_API)
                    eligible = [
                        str(v.get("name"))
                        for v in items
                        if not v.get("properties", {}).get("publishingProfile", {}).get("excludeFromLatest")
                    ]
                    found = latest(eligible)
                    if found is None:
                        raise SourceError(f"{definition_id} has no version eligible for 'latest'")
                    version = found
                version_id = f"{definition_id}/versions/{version}"
                body = await session.arm.get(version_id, GALLERY_API)
            except DistributeError as exc:
                raise SourceError(str(exc)) from exc
            if body is None:
                raise SourceError(f"gallery image version {version_id} does not exist")
            props = definition.get("properties", {})
            return await export_disk(
                ctx,
                session,
                subscription=arm_id.subscription,
                resource_group=_export_group(ctx.config.section("azure"), arm_id.resource_group),
                location=str(body.get("location") or definition.get("location", "")),
                creation={"createOption": "FromImage", "galleryImageReference": {"id": version_id}},
                label=f"{arm_id.get('images')}-{version}",
                os_type=_os(props.get("osType")),
                generation=_gen(props.get("hyperVGeneration")),
                exact_version=version,
            )


class AzurePlatformImageSource:
    """``PlatformImage`` from Azure Marketplace publishers, only when ``[azure]`` names a subscription and location.

    Needs ``[azure] subscription_id``, ``location`` and ``export_resource_group``; publishers the qemu provider builds
    locally (Debian, aib-sdk) are left to it.
    """

    type_name: ClassVar[str] = "PlatformImage"
    spec_model: ClassVar[type[BaseModel]] = PlatformImageSource

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        section = config.section("azure")
        publisher = str(getattr(spec, "publisher", "") or "").lower()
        return bool(section.get("subscription_id") and section.get("location")) and publisher not in LOCAL_PUBLISHERS

    async def resolve(self, spec: BaseModel, ctx: RunContext) -> DiskImage:
        assert isinstance(spec, PlatformImageSource)
        section = ctx.config.section("azure")
        subscription, location = str(section["subscription_id"]), str(section["location"])
        group = section.get("export_resource_group")
        if not group:
            raise UsageError("[azure] export_resource_group is required to export platform images")
        if not (spec.publisher and spec.offer and spec.sku):
            raise UsageError("PlatformImage needs publisher, offer and sku")
        base = (
            f"/subscriptions/{subscription}/providers/Microsoft.Compute/locations/{location}/publishers/"
            f"{spec.publisher}/artifacttypes/vmimage/offers/{spec.offer}/skus/{spec.sku}/versions"
        )
        settings = AzureSettings.from_config(ctx.config)
        async with AzureSession(settings, ctx.options.credential) as session:
            version = spec.version or "latest"
            try:
                if version.lower() == "latest":
                    listing = await session.arm.get(base, COMPUTE_API)
                    names = [str(v.get("name")) for v in (listing if isinstance(listing, list) else [])]
                    found = latest(names)
                    if found is None:
                        raise SourceError(f"no versions of {spec.publisher}:{spec.offer}:{spec.sku} in {location}")
                    version = found
                elif await session.arm.get(f"{base}/{version}", COMPUTE_API) is None:
                    raise SourceError(f"{spec.publisher}:{spec.offer}:{spec.sku}:{version} not found in {location}")
            except DistributeError as exc:
                raise SourceError(str(exc)) from exc
            generation: HyperVGeneration = "V2" if spec.sku.lower().endswith(("gen2", "-g2")) else "V1"
            os_type: OsType = "Windows" if spec.publisher.lower().startswith("microsoftwindows") else "Linux"
            return await export_disk(
                ctx,
                session,
                subscription=subscription,
                resource_group=str(group),
                location=location,
                creation={"createOption": "FromImage", "imageReference": {"id": f"{base}/{version}"}},
                label=f"{spec.offer}-{spec.sku}-{version}",
                os_type=os_type,
                generation=generation,
                exact_version=version,
            )
