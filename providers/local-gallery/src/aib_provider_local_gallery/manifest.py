"""The JSON records of the gallery: gallery, image definition, and image (version or managed image) manifests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Record(BaseModel):
    """camelCase on disk, like the ARM resources these stand for; unknown keys kept for forward compatibility."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True, extra="allow"
    )


class GalleryRecord(Record):
    id: str
    name: str
    resource_group: str
    location: str
    created_at: str = Field(default_factory=utc_now)


class DefinitionRecord(Record):
    id: str
    name: str
    gallery: str
    resource_group: str
    location: str
    publisher: str
    offer: str
    sku: str
    os_type: Literal["Linux", "Windows"] = "Linux"
    os_state: Literal["Generalized", "Specialized"] = "Generalized"
    hyper_v_generation: Literal["V1", "V2"] = "V1"
    created_at: str = Field(default_factory=utc_now)


class RegionReplica(Record):
    """One region's copy of an image: where it is, its verified digest, and how it was made."""

    region: str
    replica_count: int = 1
    storage_account_type: str = "Standard_LRS"
    path: str
    sha256: str
    size: int
    method: Literal["copy", "reflink", "reference"] = "copy"
    """``reference``: a Shallow replica — no copy of its own; ``path`` is the primary region's copy."""
    state: Literal["Succeeded", "Failed"] = "Succeeded"


class ArtifactInfo(Record):
    sha256: str
    size: int
    virtual_size: int
    format: str = "qcow2"


class ImageManifest(Record):
    """A published gallery image version or managed image. Written last; its presence makes the image visible."""

    id: str
    name: str
    kind: Literal["galleryImageVersion", "managedImage"]
    resource_group: str
    location: str
    gallery: str | None = None
    definition: str | None = None
    os_type: Literal["Linux", "Windows"] = "Linux"
    hyper_v_generation: Literal["V1", "V2"] = "V1"
    exclude_from_latest: bool = False
    replication_mode: Literal["Full", "Shallow"] = "Full"
    """``Full``: a verified copy per region; ``Shallow``: one copy in the primary (first) region, the other regions
    reference it (``method: reference``), as AIB 2025-10-01's ``replicationMode: Shallow``."""
    artifact_tags: dict[str, str] = Field(default_factory=dict)
    artifact: ArtifactInfo
    regions: list[RegionReplica]
    run_id: str = ""
    template_name: str = ""
    template_digest: str = ""
    source_version: str | None = None
    provisioning_state: Literal["Succeeded"] = "Succeeded"
    boot: dict[str, Any] | None = None
    """How the image boots when it is not self-booting (the tiny test guest): ``kernel``/``initrd`` (copies kept
    with the image), ``kernelArgs``, ``diskInterface``, ``access``, ``attributes``."""
    created_at: str = Field(default_factory=utc_now)

    def replica(self, region: str | None) -> RegionReplica:
        """The copy in ``region`` (case-insensitive), else the one in the image's own location, else the first."""
        for wanted in (region, self.location):
            for rep in self.regions:
                if wanted is not None and rep.region.lower() == wanted.lower():
                    return rep
        return self.regions[0]
