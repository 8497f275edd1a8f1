"""Provider settings from ``[s3-vhd]`` in ``aib.toml`` or ``AIB_S3_VHD_<KEY>`` environment variables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aib_sdk.config import Config
from aib_sdk.errors import UsageError

PROVIDER = "s3-vhd"
MiB = 1024 * 1024


@dataclass(frozen=True)
class S3Settings:
    """Tuning knobs; the defaults suit real S3 and moto alike.

    - ``max_concurrency``: parts in flight per object (uploads, copies and ranged downloads).
    - ``part_size``: force a part size in bytes (else chosen from the object size, see :func:`parts.plan_parts`).
    - ``replication``: ``copy`` (default) uploads once per endpoint (or AWS partition) and fills the other regions
      there by server-side copy from the finished one; ``upload`` uploads to every region concurrently. Measured
      against moto with three regions, ``copy`` was 1.5 to 1.9 times faster (see the README).
    - ``single_copy_max``: objects up to this size (default 5 GiB, S3's limit) are copied with one CopyObject,
      larger ones by a multipart UploadPartCopy.
    - ``max_attempts``/``retry_base_delay``/``retry_max_delay``: the runtime's one retry policy (jittered
      exponential backoff) on throttling, 5xx and connection errors, per request.
    - ``profile``: an AWS profile name (else botocore's chain: ``AWS_PROFILE``, env keys, config files …).
    """

    max_concurrency: int = 8
    part_size: int | None = None
    replication: Literal["copy", "upload"] = "copy"
    single_copy_max: int = 5 * 1024 * MiB
    max_attempts: int = 6
    retry_base_delay: float = 0.25
    retry_max_delay: float = 20.0
    profile: str | None = None
    connect_timeout: float = 20.0
    read_timeout: float = 120.0

    @classmethod
    def from_config(cls, config: Config) -> S3Settings:
        section = config.section(PROVIDER)
        try:
            part_mb = section.get("part_size_mb")
            replication = str(section.get("replication", cls.replication)).lower()
            if replication not in ("copy", "upload"):
                raise ValueError(f"replication must be 'copy' or 'upload', not {replication!r}")
            settings = cls(
                max_concurrency=_positive_int(section.get("max_concurrency", cls.max_concurrency)),
                part_size=None if part_mb in (None, "") else _positive_int(part_mb) * MiB,
                replication="copy" if replication == "copy" else "upload",
                single_copy_max=_positive_int(section.get("single_copy_max_mb", 5 * 1024)) * MiB,
                max_attempts=_positive_int(section.get("max_attempts", cls.max_attempts)),
                retry_base_delay=float(section.get("retry_base_delay", cls.retry_base_delay)),
                retry_max_delay=float(section.get("retry_max_delay", cls.retry_max_delay)),
                profile=section.get("profile") or None,
                connect_timeout=float(section.get("connect_timeout", cls.connect_timeout)),
                read_timeout=float(section.get("read_timeout", cls.read_timeout)),
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(f"[{PROVIDER}] configuration: {exc}") from exc
        if settings.part_size is not None and settings.part_size < 5 * MiB:
            raise UsageError(f"[{PROVIDER}] part_size_mb must be at least 5 (S3's minimum part size)")
        return settings


def _positive_int(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return number
