"""One build's use of the step cache: keys for its steps, the longest cached prefix, and a layer after each step.

:meth:`StepCache.open` runs after the source is resolved and before the build VM boots: it fetches every step's
inputs, computes the keys, finds the longest chain of stored layers that matches the template's first steps,
leases it (pruning leaves it alone) and says which disk to boot. After each step that ran, :meth:`after_step` asks
the machine for a snapshot (the optional ``snapshot`` member of :class:`~aib_sdk.protocols.LayeredMachine`) and
publishes it. Build hosts without ``snapshot`` simply do not cache. Deprovisioning, validation and distribution are
never cached.

RAM state (``[cache] ram_state``, on by default): a machine with ``saves_state`` also saves its RAM and device state
at the moment each layer is frozen (not after the guest rebooted in this run); the files are published with the
layer and counted in its size. A rebuild whose top cached layer has one hands it to the build host
(``DiskImage.saved_state``), which resumes it instead of booting, or boots the layer (with a warning) when it cannot.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio
from pydantic import BaseModel

from aib_sdk import disks
from aib_sdk.artifacts import DiskFormat, DiskImage, SavedState, StateRequest
from aib_sdk.context import RunContext
from aib_sdk.events import Event, LogLine, WarningEvent
from aib_sdk.protocols import VmRequest

from .inputs import PinnedFetcher, prefetch
from .keys import root_key, spec_json, step_key
from .settings import CacheSettings
from .store import LayerInfo, LayerStore, Lease, TempLayer


@dataclass
class StepSlot:
    """What the cache knows of one customize step."""

    index: int
    name: str
    type_name: str
    key: str | None = None
    pins: dict[str, Path] = field(default_factory=dict)
    cached: bool = False
    stored: bool = False
    ram_state: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "key": self.key,
            "cached": self.cached,
            "stored": self.stored,
            "ramState": self.ram_state,
            "note": self.note,
        }


def host_facts(host: type[Any], vm: VmRequest, vm_profile: BaseModel | None, ctx: RunContext) -> dict[str, Any]:
    """Every build-host setting that changes what the disk holds: the host, the VM profile, its own facts."""
    facts: dict[str, Any] = {
        "buildHost": getattr(host, "name", type(host).__name__),
        "vmSize": vm.vm_size,
        "osDiskSizeGB": vm.os_disk_size_gb,
        "dataDisksGB": list(vm.data_disk_sizes_gb),
        "osType": vm.os_type,
        "vmProfile": spec_json(vm_profile) if vm_profile is not None else None,
    }
    own = getattr(host, "cache_facts", None)
    if callable(own):
        facts["host"] = own(ctx.config)
    return facts


class StepCache:
    """The step cache of one run (a disabled one answers "nothing cached, store nothing")."""

    def __init__(
        self,
        ctx: RunContext,
        emit: Callable[[Event], None],
        *,
        store: LayerStore | None,
        settings: CacheSettings | None,
        image: DiskImage,
        reason: str = "",
    ) -> None:
        self.ctx = ctx
        self.emit = emit
        self.store = store
        self.settings = settings
        self.image = image
        self.boot_image = image
        self.slots: list[StepSlot] = []
        self.prefix = 0
        self.base: str = ""
        self.reason = reason
        self.resumed_from: str | None = None
        self._leases: list[Lease] = []
        self._publishing = store is not None
        self._top: LayerInfo | None = None
        self.host_name = ""
        self.ram_state = bool(settings and settings.ram_state and ctx.options.ram_state)
        """Save RAM state with the layers and resume it (``[cache] ram_state`` and ``BuildOptions.ram_state``)."""
        self.ram_restored = False
        self._ram_refusal = ""

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def log(self, line: str) -> None:
        self.emit(LogLine(source="cache", stream="info", line=line))

    # Opening -----------------------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        ctx: RunContext,
        emit: Callable[[Event], None],
        *,
        image: DiskImage,
        steps: Sequence[tuple[str, str, type[Any], BaseModel]],
        facts: dict[str, Any],
        enabled: bool,
        host_name: str = "",
    ) -> StepCache:
        """Key ``steps`` (name, type, runner, spec) and find the longest stored prefix."""
        settings = CacheSettings.from_config(ctx.config)
        if not enabled or not settings.enabled:
            why = "off (--no-cache)" if not enabled else "off ([cache] enabled = false)"
            cache = cls(ctx, emit, store=None, settings=settings, image=image, reason=why)
            cache.slots = [StepSlot(i, name, type_name) for i, (name, type_name, _, _) in enumerate(steps)]
            return cache
        store = LayerStore(settings.directory)
        cache = cls(ctx, emit, store=store, settings=settings, image=image)
        cache.host_name = host_name
        try:
            await anyio.to_thread.run_sync(store.ensure)
            await cache._key(steps, facts)
            await cache._find_prefix()
        except Exception as exc:  # the build does not need the cache: it runs every step without it
            emit(WarningEvent(message=f"step cache unavailable, running every step without it: {exc}"))
            await cache.close()
            off = cls(ctx, emit, store=None, settings=settings, image=image, reason=f"unavailable: {exc}")
            off.slots = [StepSlot(i, name, type_name) for i, (name, type_name, _, _) in enumerate(steps)]
            return off
        return cache

    async def _key(self, steps: Sequence[tuple[str, str, type[Any], BaseModel]], facts: dict[str, Any]) -> None:
        assert self.store is not None
        image = self.image
        memo = self.store.root  # digests recorded under <root>/digests (disks.cached_sha256)
        self.base = image.sha256 or await disks.cached_sha256(image.path, memo)
        boot_files = {
            name: await disks.cached_sha256(path, memo)
            for name, path in (("kernel", image.kernel), ("initrd", image.initrd))
            if path is not None
        }
        source = {
            "exactVersion": image.exact_version,
            "sha256": self.base,
            "format": image.format,
            "osType": image.os_type,
            "hyperVGeneration": image.hyper_v_generation,
            "kernelArgs": image.kernel_args,
            "diskInterface": image.disk_interface,
            "access": image.access,
            "bootFiles": boot_files,
        }
        parent: str | None = root_key(source=source, host=facts)
        for index, (name, type_name, runner, spec) in enumerate(steps):
            slot = StepSlot(index, name, type_name)
            self.slots.append(slot)
            if parent is None:
                continue
            if getattr(runner, "cacheable", True) is False:
                slot.note = f"step type {type_name} is not cacheable"
                parent = None
                continue
            try:
                inputs, slot.pins = await prefetch(self.ctx.fetcher, runner, spec, name)
            except Exception:  # the step itself will fetch again and fail, naming itself
                slot.note = "its inputs could not be fetched in advance"
                parent = None
                continue
            slot.key = parent = step_key(parent, type_name=type_name, spec=spec_json(spec), inputs=inputs)

    async def _find_prefix(self) -> None:
        store = self.store
        assert store is not None
        for slot in reversed(self.slots):
            if slot.key is None:
                continue
            chain = await anyio.to_thread.run_sync(store.chain, slot.key)
            if chain is None or chain[0].base != self.base:
                continue
            lease = await anyio.to_thread.run_sync(store.lease, [layer.key for layer in chain])
            if lease is None:
                continue
            self._leases.append(lease)
            await anyio.to_thread.run_sync(store.touch, [layer.key for layer in chain])
            # The base link is re-pointed at the disk the source resolved (same digest) before QEMU opens the chain.
            await anyio.to_thread.run_sync(store.link_base, self.base, self.image.path)
            self.prefix = slot.index + 1
            self._top = chain[-1]
            for earlier in self.slots[: self.prefix]:
                earlier.cached = True
            saved = self._saved_state(chain[-1]) if self.ram_state else None
            self.boot_image = dataclasses.replace(
                self.image,
                path=store.file_path(chain[-1]),
                format=cast("DiskFormat", chain[-1].format),
                sha256=None,
                saved_state=saved,
            )
            how = "resuming the RAM state of" if saved is not None else "booting"
            self.log(
                f"{self.prefix} of {len(self.slots)} step(s) cached: {how} layer {chain[-1].key[:12]} "
                f"(after step {slot.name!r})"
            )
            return

    def _saved_state(self, layer: LayerInfo) -> SavedState | None:
        """The RAM state stored with ``layer``, if its record names one (the host checks the rest)."""
        state = layer.ram_state
        assert self.store is not None
        if state is None or len(layer.files()) != 3:
            return None
        return SavedState(
            state=self.store.data / str(state["file"]),
            access=self.store.data / str(state["access"]),
            shape=str(state.get("shape", "")),
            boot_id=str(state.get("bootId", "")),
            layer=layer.key,
        )

    def resumed(self, machine: Any) -> bool:
        """Whether ``machine`` resumed the top layer's RAM state (it did not boot); logged once."""
        if getattr(machine, "resumed_state", False) and not self.ram_restored and self._top is not None:
            self.ram_restored = True
            self.log(f"RAM state of layer {self._top.key[:12]} restored: the guest resumed without booting")
        return self.ram_restored

    # During the run ----------------------------------------------------------------------------------------

    def context_for(self, index: int) -> tuple[RunContext, PinnedFetcher | None]:
        """The run context a step runs with: its prefetched inputs pinned."""
        if self.store is None or index >= len(self.slots):
            return self.ctx, None
        fetcher = PinnedFetcher(self.ctx.fetcher, self.slots[index].pins)
        return dataclasses.replace(self.ctx, fetcher=fetcher), fetcher

    def stop(self, why: str, *, quiet: bool = False) -> None:
        """Store no more layers in this run (a build host without layers is normal: ``quiet``)."""
        if self._publishing:
            self._publishing = False
            self.reason = why
            if not quiet:
                self.log(f"later steps are not cached in this run: {why}")

    async def after_step(self, index: int, machine: Any, fetcher: PinnedFetcher | None) -> LayerInfo | None:
        """Store the disk state after step ``index`` as a layer; ``None`` if it is not stored."""
        store, slot = self.store, self.slots[index]
        if store is None or not self._publishing:
            return None
        if fetcher is not None and fetcher.unpinned:
            self.stop(f"step {slot.name!r} fetched {fetcher.unpinned[0]}, which its spec does not name")
            return None
        if slot.key is None:
            self.stop(f"step {slot.name!r}: {slot.note or 'no key'}")
            return None
        snapshot = getattr(machine, "snapshot", None)
        fmt = getattr(machine, "layer_format", None)
        if not callable(snapshot) or not isinstance(fmt, str):
            self.stop(f"the build host {self.host_name} keeps no disk layers", quiet=True)
            return None
        if self._top is not None:
            backing, backing_format = store.file_path(self._top), self._top.format
        else:
            backing = await anyio.to_thread.run_sync(store.link_base, self.base, self.image.path)
            backing_format = self.image.format
        temps: list[TempLayer] = []
        entries: list[Any] = []

        async def new_temp(suffix: str) -> TempLayer:
            temp = await anyio.to_thread.run_sync(store.new_temp, suffix)
            temps.append(temp)
            # Journaled too: after a kill -9, ``aib gc`` removes the half-written file (a later build never uses it).
            entries.append(await self.ctx.journal.acquire("file", {"path": str(temp.path)}, "step-cache layer"))
            return temp

        try:
            temp = await new_temp(fmt)
            request: StateRequest | None = None
            if self.ram_state and not self._ram_refusal and getattr(machine, "saves_state", False):
                request = StateRequest(state=(await new_temp("ram")).path, access=(await new_temp("access")).path)
            started = anyio.current_time()
            if request is not None:
                ok = await snapshot(temp.path, backing, backing_format, state=request)
            else:
                ok = await snapshot(temp.path, backing, backing_format)
            if not ok:
                self.stop(f"the build VM cannot snapshot its disk ({getattr(machine, 'snapshot_refusal', '')})")
                return None
            info = LayerInfo(
                key=slot.key,
                parent=self._top.key if self._top is not None else None,
                base=self.base,
                file=f"{slot.key}.{fmt}",
                format=fmt,
                size=0,
                created=time.time(),
                template=self.ctx.template_name,
                step=slot.name,
                step_index=index,
                type=slot.type_name,
                host=self.host_name,
                run_id=self.ctx.run_id,
                source_version=self.image.exact_version,
            )
            extras = self._state_files(slot, request, temps, info)
            outcome, lease = await anyio.to_thread.run_sync(store.publish_leased, temp, info, extras)
        except Exception as exc:
            self.stop(f"storing the layer after step {slot.name!r} failed: {exc}")
            return None
        finally:
            with anyio.CancelScope(shield=True):
                for part in temps:
                    await anyio.to_thread.run_sync(part.discard)
                for entry in entries:
                    await self.ctx.journal.release(entry)
        if outcome == "exists":
            self.stop(f"another build stored the layer of step {slot.name!r} first")
            return None
        if lease is not None:
            self._leases.append(lease)
        slot.stored = True
        slot.ram_state = info.ram_state is not None
        self._top = info
        with_state = " with RAM state" if slot.ram_state else ""
        self.log(
            f"stored layer {info.key[:12]}{with_state} after step {slot.name!r} "
            f"({info.size / 1048576:.1f} MiB in {anyio.current_time() - started:.1f}s)"
        )
        await self._evict()
        return info

    def _state_files(
        self, slot: StepSlot, request: StateRequest | None, temps: list[TempLayer], info: LayerInfo
    ) -> list[tuple[TempLayer, str]]:
        """The RAM state files to publish with the layer (recorded in ``info.extra``); none when the machine did
        not save them (then no later layer of this run gets RAM state either, and the log says why once)."""
        if request is None:
            return []
        if not request.saved:
            self._ram_refusal = request.refusal or "the build host did not save it"
            self.log(f"no RAM state with the layer of step {slot.name!r} or later ones: {self._ram_refusal}")
            return []
        state, access = temps[1], temps[2]
        names = (f"{info.key}.ram", f"{info.key}.access")
        info.extra["ramState"] = {
            "file": names[0],
            "access": names[1],
            "shape": request.shape,
            "bootId": request.boot_id,
        }
        return [(state, names[0]), (access, names[1])]

    async def _evict(self) -> None:
        store, settings = self.store, self.settings
        if store is None or settings is None or settings.max_size is None:
            return
        removed = await anyio.to_thread.run_sync(lambda: store.prune(max_size=settings.max_size))
        if removed:
            freed = sum(i.size for i in removed) / 1048576
            self.log(f"evicted {len(removed)} least recently used layer(s) ({freed:.1f} MiB) to stay under max_size")

    async def close(self) -> None:
        for lease in self._leases:
            lease.close()
        self._leases = []

    def explain_resume(self, run_id: str, record: dict[str, Any]) -> None:
        """``--resume``: say which steps of run ``run_id`` are reused and why the first one that runs again does."""
        self.resumed_from = run_id
        details = record.get("details") if isinstance(record.get("details"), dict) else {}
        assert isinstance(details, dict)
        earlier_cache = details.get("cache") if isinstance(details.get("cache"), dict) else {}
        assert isinstance(earlier_cache, dict)
        earlier = [s for s in earlier_cache.get("steps") or [] if isinstance(s, dict)]
        ran = [s for s in details.get("steps") or [] if isinstance(s, dict) and s.get("phase") == "customize"]
        total = len(self.slots)
        changed = next(
            (
                i
                for i, slot in enumerate(self.slots)
                if slot.key is None or i >= len(earlier) or earlier[i].get("key") != slot.key
            ),
            total,
        )
        failed = next((int(s["index"]) for s in ran if not s.get("ok") and isinstance(s.get("index"), int)), None)
        line = f"resuming run {run_id}: {self.prefix} of {total} step(s) reused from its layers"
        if failed is not None and failed <= changed and failed < total:
            line += f"; step {failed + 1} ({self.slots[failed].name!r}) failed in that run and runs again"
        elif changed < total:
            name = self.slots[changed].name
            line += f"; step {changed + 1} ({name!r}) changed since that run, so it and every later step run"
        stop = min(changed, failed if failed is not None else total)
        if self.prefix < stop:
            line += f"; steps {self.prefix + 1}-{stop} are no longer in the cache (pruned) and run again"
        self.log(line)

    # Reporting ---------------------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """``details.cache`` of run.json."""
        return {
            "enabled": self.enabled,
            "reason": self.reason,
            "directory": str(self.settings.directory) if self.settings else None,
            "cachedSteps": self.prefix,
            "ramState": self.ram_state,
            "ramStateRestored": self.ram_restored,
            "resumedFrom": self.resumed_from,
            "steps": [slot.to_json() for slot in self.slots],
        }
