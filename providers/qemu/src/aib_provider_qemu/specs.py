"""The qemu provider's own template types (kept apart from the sources, so validating a template imports no
implementation)."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from aib_sdk.models.specs import AibModel

_SHA256_HEX = frozenset("0123456789abcdef")


class DiskImageSource(AibModel):
    """``{"type": "DiskImage", "uri": "file:///…|https://…", "format", "sha256Checksum", …}``."""

    type: Literal["DiskImage"]
    uri: str
    format: Literal["qcow2", "raw", "vpc", "vmdk"] | None = None
    sha256_checksum: str = ""
    os_type: Literal["Linux", "Windows"] = "Linux"
    hyper_v_generation: Literal["V1", "V2"] = "V1"
    kernel: str | None = None
    initrd: str | None = None
    kernel_args: str | None = None
    disk_interface: Literal["virtio", "nvme", "scsi", "ide"] = "virtio"
    access: Literal["cloud-init", "static"] | None = None

    @field_validator("sha256_checksum")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if value and (len(value) != 64 or not set(value) <= _SHA256_HEX):
            raise ValueError("sha256Checksum must be 64 hexadecimal digits")
        return value
