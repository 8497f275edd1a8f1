"""Template entry models of this provider: the ``S3Image`` distributor and the ``S3Image`` source.

AIB's own ``VHD`` distributor keeps the core's model (:class:`aib_sdk.models.specs.VhdDistributor`); this provider
claims it when its ``uri`` is ``s3://…``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from aib_provider_s3_vhd import locations
from aib_sdk.models.specs import AibModel, DistributorSpec

S3Format = Literal["vhd", "vhd-dynamic", "raw", "qcow2"]
"""What an ``S3Image`` target stores: ``vhd`` is a fixed VHD aligned to 1 MiB (Azure's rules)."""

RESERVED_METADATA = frozenset(
    {
        "sha256",
        "aib-template-digest",
        "aib-run-id",
        "aib-template-name",
        "aib-format",
        "aib-os-type",
        "aib-hyper-v-generation",
        "aib-source-version",
    }
)
"""Object metadata keys this provider writes itself; a template's ``metadata`` may not set them."""


class S3Region(AibModel):
    """One region of an ``S3Image`` target: a bucket there, and optionally a non-default endpoint."""

    bucket: str
    region: str
    endpoint_url: str | None = None

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return locations.check_bucket(value)

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return locations.check_region(value)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else locations.check_endpoint(value)


class S3ImageDistributor(DistributorSpec):
    """Not AIB's: the image as one object per region (same key in each region's bucket)."""

    type: Literal["S3Image"]
    regions: list[S3Region] = Field(min_length=1)
    key: str
    format: S3Format = "vhd"
    storage_class: str | None = Field(default=None, pattern=r"^[A-Z][A-Z_]*$")
    metadata: dict[str, str] | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return locations.check_key(value)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, text in (value or {}).items():
            if not name or not all(ch.isascii() and (ch.isalnum() or ch in "-_.") for ch in name):
                raise ValueError(f"metadata key {name!r}: use ASCII letters, digits, '-', '_' and '.'")
            if name.lower() in RESERVED_METADATA:
                raise ValueError(f"metadata key {name!r} is written by aib-sdk itself")
            if not text.isascii():
                raise ValueError(f"metadata value of {name!r} must be ASCII")
        return value

    @model_validator(mode="after")
    def _distinct_buckets(self) -> S3ImageDistributor:
        seen: set[tuple[str, str | None]] = set()
        for region in self.regions:
            ident = (region.bucket, region.endpoint_url)
            if ident in seen:
                raise ValueError(f"bucket {region.bucket!r} is listed twice")
            seen.add(ident)
        return self


class S3ImageSource(AibModel):
    """Not AIB's: a base image stored as an S3 object, verified by ``sha256Checksum``.

    ``format``, ``osType`` and ``hyperVGeneration`` default to what the object's metadata says (this provider's
    distributors write them), else ``format`` is guessed from the key's extension.
    """

    type: Literal["S3Image"]
    uri: str
    sha256_checksum: str = Field(default="", pattern=r"^([0-9a-fA-F]{64})?$")
    region: str | None = None
    endpoint_url: str | None = None
    format: Literal["vhd", "vpc", "raw", "qcow2", "vmdk"] | None = None
    os_type: Literal["Linux", "Windows"] | None = None
    hyper_v_generation: Literal["V1", "V2"] | None = None

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        locations.parse_s3_uri(value)
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return None if value is None else locations.check_region(value)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else locations.check_endpoint(value)
