"""Publish one image file to every region of a target concurrently.

Per region: HeadObject first (an object with the same size and ``sha256`` metadata is skipped), then either a
multipart upload from the file or, with ``replication = "copy"`` (the default) when another region on the same
endpoint (or in the same AWS partition) holds the image, a server-side copy from it. Regions in different copy
domains, and all regions with ``replication = "upload"``, upload concurrently. A copy the endpoint refuses
falls back to an upload. A finished object is checked (size and digest) before the region counts as done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import anyio

from aib_provider_s3_vhd import multipart
from aib_provider_s3_vhd.locations import S3Location
from aib_provider_s3_vhd.multipart import RetryHook
from aib_provider_s3_vhd.parts import Part, part_size_for, plan_parts
from aib_provider_s3_vhd.settings import S3Settings
from aib_provider_s3_vhd.transport import ClientPool, Endpoint, copy_domain, copy_unsupported, describe, with_retries
from aib_sdk.context import RunContext
from aib_sdk.errors import DistributeError
from aib_sdk.events import TargetStatus

Outcome = Literal["uploaded", "copied", "skipped", "failed"]


@dataclass(frozen=True)
class RegionTarget:
    """One destination: the label used in events and ``RunOutput.regions`` (the region name), where, and how."""

    label: str
    location: S3Location
    endpoint: Endpoint


@dataclass
class ObjectSpec:
    """What every region's object carries besides its bytes."""

    metadata: dict[str, str]
    tags: Mapping[str, str] = field(default_factory=dict)
    storage_class: str | None = None
    content_type: str = "application/octet-stream"

    def create_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"Metadata": dict(self.metadata), "ContentType": self.content_type}
        if self.tags:
            args["Tagging"] = urlencode(dict(self.tags))
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        return args


@dataclass
class RegionResult:
    target: RegionTarget
    outcome: Outcome
    message: str = ""
    etag: str | None = None


@dataclass
class _Group:
    """Regions that can copy from each other; ``source`` is set once one of them holds the image."""

    settled: anyio.Event = field(default_factory=anyio.Event)
    source: RegionResult | None = None
    source_from_this_run: bool = False


class Publication:
    """Publishes ``path`` (``size`` bytes, hex ``digest``) to ``targets`` for one ``distribute[]`` entry."""

    def __init__(
        self,
        ctx: RunContext,
        *,
        run_output_name: str,
        type_name: str,
        path: Path,
        size: int,
        digest: str,
        targets: Sequence[RegionTarget],
        spec: ObjectSpec,
        settings: S3Settings,
        pool: ClientPool,
    ) -> None:
        self.ctx, self.name, self.type_name = ctx, run_output_name, type_name
        self.path, self.size, self.digest = path, size, digest
        self.targets, self.spec, self.settings, self.pool = list(targets), spec, settings, pool
        self.parts: list[Part] = plan_parts(size, part_size_for(size, settings.part_size))
        self.results: dict[str, RegionResult] = {}

    # events ----------------------------------------------------------------------------------------------------

    def _status(
        self, target: RegionTarget, state: Literal["Running", "Succeeded", "Failed", "Canceled"], message: str
    ) -> None:
        self.ctx.emit(
            TargetStatus(
                run_output_name=self.name,
                type=self.type_name,
                region=target.label,
                state=state,
                message=message,
                artifact_uri=target.location.uri,
            )
        )

    def _progress(self, task: str, target: RegionTarget) -> Callable[[int], None]:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            self.ctx.progress(task, target.location.uri, done, self.size, target=self.name, region=target.label)

        self.ctx.progress(task, target.location.uri, 0, self.size, target=self.name, region=target.label)
        return advance

    def _retry_logger(self, target: RegionTarget) -> RetryHook:
        def log(attempt: int, exc: BaseException, delay: float) -> None:
            self.ctx.log(
                f"s3:{self.name}:{target.label}",
                f"retrying after {describe(exc)} (attempt {attempt} of {self.settings.max_attempts}, "
                f"waiting {delay:.2f}s)",
            )

        return log

    # steps -----------------------------------------------------------------------------------------------------

    async def _existing_etag(self, client: Any, target: RegionTarget) -> str | None:
        """The ETag of an object at the target that already holds this image, else ``None``."""
        loc = target.location
        try:
            head = await with_retries(lambda: client.head_object(Bucket=loc.bucket, Key=loc.key), self.settings)
        except Exception:
            return None  # absent, or not readable: the upload decides
        same_digest = head.get("Metadata", {}).get("sha256", "").lower() == self.digest
        if same_digest and int(head.get("ContentLength", -1)) == self.size:
            return str(head.get("ETag", ""))
        return None

    async def _verify(self, client: Any, target: RegionTarget, expected_etag: str | None) -> str:
        loc = target.location
        head = await with_retries(lambda: client.head_object(Bucket=loc.bucket, Key=loc.key), self.settings)
        problems = []
        if int(head.get("ContentLength", -1)) != self.size:
            problems.append(f"size {head.get('ContentLength')} instead of {self.size}")
        if head.get("Metadata", {}).get("sha256", "") != self.digest:
            problems.append("sha256 metadata does not match")
        if expected_etag is not None and head.get("ETag") != expected_etag:
            problems.append(f"ETag {head.get('ETag')} differs from the source's {expected_etag}")
        if problems:
            with anyio.CancelScope(shield=True):
                await with_retries(lambda: client.delete_object(Bucket=loc.bucket, Key=loc.key), self.settings)
            raise DistributeError(f"{loc.uri} failed verification after upload: {'; '.join(problems)}")
        return str(head.get("ETag", ""))

    async def _upload(self, client: Any, target: RegionTarget) -> RegionResult:
        await multipart.upload_file(
            client,
            self.path,
            target.location,
            self.parts,
            self.spec.create_args(),
            self.settings,
            on_bytes=self._progress("upload", target),
            on_retry=self._retry_logger(target),
            journal=self.ctx.journal,
        )
        etag = await self._verify(client, target, None)
        return RegionResult(target, "uploaded", f"uploaded {self.size} bytes", etag)

    async def _copy(self, client: Any, target: RegionTarget, group: _Group) -> RegionResult:
        source = group.source
        assert source is not None and source.etag
        origin = source.target.location
        advance = self._progress("replicate", target)
        if self.size <= self.settings.single_copy_max:
            await multipart.copy_whole(
                client,
                origin,
                source.etag,
                target.location,
                self.spec.create_args(),
                self.settings,
                on_retry=self._retry_logger(target),
            )
            advance(self.size)
            expected_etag = None  # a single-part copy has its own ETag
        else:
            await multipart.copy_object(
                client,
                origin,
                source.etag,
                target.location,
                self.parts,
                self.spec.create_args(),
                self.settings,
                on_bytes=advance,
                on_retry=self._retry_logger(target),
                journal=self.ctx.journal,
            )
            expected_etag = source.etag if group.source_from_this_run else None
        etag = await self._verify(client, target, expected_etag)
        return RegionResult(target, "copied", f"copied server-side from {origin.uri}", etag)

    async def _fill(self, client: Any, target: RegionTarget, group: _Group | None, primary: bool) -> RegionResult:
        if group is None or primary:
            result = await self._upload(client, target)
            if group is not None:
                group.source, group.source_from_this_run = result, True
            return result
        await group.settled.wait()
        if group.source is not None:
            try:
                return await self._copy(client, target, group)
            except Exception as exc:
                if not copy_unsupported(exc):
                    raise
                self.ctx.log(
                    f"s3:{self.name}:{target.label}", f"server-side copy refused ({describe(exc)}); uploading instead"
                )
        return await self._upload(client, target)

    async def _region(self, target: RegionTarget, group: _Group | None, primary: bool) -> None:
        client = await self.pool.client(target.endpoint)
        self._status(target, "Running", "")
        try:
            result = await self._fill(client, target, group, primary)
        except Exception as exc:
            message = exc.args[0] if isinstance(exc, DistributeError) and exc.args else describe(exc)
            self.results[target.label] = RegionResult(target, "failed", str(message))
            self._status(target, "Failed", str(message))
            return
        except BaseException:
            self._status(target, "Canceled", "cancelled; multipart upload aborted")
            raise
        finally:
            if primary and group is not None:
                group.settled.set()
        self.results[target.label] = result
        self._status(target, "Succeeded", result.message)

    async def run(self) -> dict[str, RegionResult]:
        """Publish to every target concurrently; return each region's result (failures included, not raised)."""
        clients = {t.label: await self.pool.client(t.endpoint) for t in self.targets}
        existing: dict[str, str | None] = {}

        async def probe(target: RegionTarget) -> None:
            existing[target.label] = await self._existing_etag(clients[target.label], target)

        async with anyio.create_task_group() as tg:
            for target in self.targets:
                tg.start_soon(probe, target)

        groups: dict[str, _Group] = {}
        plan: list[tuple[RegionTarget, _Group | None, bool]] = []
        for target in self.targets:
            etag = existing[target.label]
            domain = copy_domain(clients[target.label])
            if etag is not None:
                result = RegionResult(
                    target,
                    "skipped",
                    f"skipped: {target.location.uri} already holds this image (sha256 {self.digest[:12]}…)",
                    etag,
                )
                self.results[target.label] = result
                self._status(target, "Succeeded", result.message)
                known = groups.setdefault(domain, _Group())
                if known.source is None:
                    known.source = result
                    known.settled.set()
        for target in self.targets:
            if target.label in self.results:
                continue
            if self.settings.replication != "copy":
                plan.append((target, None, False))
                continue
            domain = copy_domain(clients[target.label])
            if domain in groups:
                plan.append((target, groups[domain], False))
            else:
                groups[domain] = _Group()
                plan.append((target, groups[domain], True))

        async with anyio.create_task_group() as tg:
            for target, group, primary in plan:
                tg.start_soon(self._region, target, group, primary)
        return {t.label: self.results[t.label] for t in self.targets}
