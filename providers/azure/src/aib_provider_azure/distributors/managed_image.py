"""AIB's ``ManagedImage`` target on Azure: the VHD goes to the staging account, then ``Microsoft.Compute/images``."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from aib_provider_azure.arm import COMPUTE_API, ArmConflict
from aib_provider_azure.distributors.common import staged_vhd
from aib_provider_azure.release import create_resource
from aib_provider_azure.session import AzureSession
from aib_provider_azure.settings import AzureSettings
from aib_sdk.artifacts import Artifact, RunOutput
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.errors import ConflictError, UsageError
from aib_sdk.models.specs import ManagedImageDistributor
from aib_sdk.routing import is_azure_arm_id, parse_arm_id


def image_body(artifact: Artifact, location: str, blob_uri: str, tags: dict[str, str] | None) -> dict[str, Any]:
    """The ``Microsoft.Compute/images`` PUT body for a generalized OS disk read from ``blob_uri``."""
    body: dict[str, Any] = {
        "location": location,
        "properties": {
            "hyperVGeneration": artifact.hyper_v_generation,
            "storageProfile": {
                "osDisk": {"osType": artifact.os_type, "osState": "Generalized", "blobUri": blob_uri},
            },
        },
    }
    if tags:
        body["tags"] = dict(tags)
    return body


class AzureManagedImage:
    """Publishes a managed image at ``imageId`` (any non-local ARM id) in ``location``."""

    type_name: ClassVar[str] = "ManagedImage"
    spec_model: ClassVar[type[BaseModel]] = ManagedImageDistributor

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        return is_azure_arm_id(getattr(spec, "image_id", None))

    async def publish(self, artifact: Artifact, spec: BaseModel, ctx: RunContext) -> RunOutput:
        assert isinstance(spec, ManagedImageDistributor)
        name = spec.run_output_name
        arm_id = parse_arm_id(spec.image_id)
        if (
            arm_id is None
            or arm_id.namespace.lower() != "microsoft.compute"
            or [k.lower() for k, _ in arm_id.segments] != ["images"]
        ):
            raise UsageError(f"{name}: imageId must be …/providers/Microsoft.Compute/images/<name>: {spec.image_id!r}")
        settings = AzureSettings.from_config(ctx.config)
        async with AzureSession(settings, ctx.options.credential) as session:
            if await session.arm.get(spec.image_id, COMPUTE_API) is not None:
                raise ConflictError(f"ManagedImage {name}: {spec.image_id} already exists")
            async with staged_vhd(session, artifact, ctx, name, spec.location) as blob:
                body = image_body(artifact, spec.location, blob.url, spec.artifact_tags)
                try:
                    image = await create_resource(
                        session.arm, ctx, spec.image_id, body, COMPUTE_API, label=f"ManagedImage {name}"
                    )
                except ArmConflict as exc:
                    raise ConflictError(f"ManagedImage {name}: {spec.image_id} already exists") from exc
        return RunOutput(name, artifact_id=str(image.get("id") or spec.image_id))
