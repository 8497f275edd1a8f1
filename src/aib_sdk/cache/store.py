"""The layer store: disk layers by key under ``[cache] dir`` (default ``AIB_CACHE/layers``).

Layout::

    index/<key>.json    the layer's record (parent, size, created, template, step …); its mtime is the last use.
                        A layer exists exactly when its record does: the record is written last.
    data/<key>.<fmt>    the layer file (qcow2 for QEMU) whose backing file is its parent's file, or bases/<digest>
    data/<key>.ram      optional: the build VM's RAM state saved with the layer (``extra.ramState`` in the record)
    data/<key>.access   with it, mode 0600: what reconnecting to the saved guest needs (client key, host keys)
    bases/<sha256>      a symlink to the source disk a chain starts from (re-pointed at every build)
    tmp/                layers being written; a file there is never used, whatever happened to its writer
    lock                serializes publication and pruning (short critical sections)

Concurrency and crashes: a layer is written to ``tmp/`` (its writer holds an exclusive ``flock`` on it), fsync'd,
hard-linked into ``data/`` (never replacing a file), then its record is written to a temporary name, fsync'd and
renamed into ``index/``. Two builds publishing one key at once: the second finds the record and drops its copy.
A build using a chain holds a shared ``flock`` on each record of the chain; pruning takes an exclusive one without
waiting and skips what is in use, so a running build never loses its backing files. Every call here blocks; the
async wrappers in :mod:`aib_sdk.cache.session` run them in worker threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

_KEY_CHARS = frozenset("0123456789abcdef")


def _is_key(text: str) -> bool:
    return len(text) == 64 and set(text) <= _KEY_CHARS


@dataclass
class LayerInfo:
    """One layer's record."""

    key: str
    parent: str | None
    """The parent layer's key; ``None`` for the first layer of a chain (its backing file is ``base``)."""
    base: str
    """sha256 of the source disk the chain starts from (``bases/<base>``)."""
    file: str
    format: str
    size: int
    created: float
    last_used: float = 0.0
    template: str = ""
    step: str = ""
    step_index: int = 0
    type: str = ""
    host: str = ""
    run_id: str = ""
    source_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ram_state(self) -> dict[str, Any] | None:
        """``extra.ramState``: the RAM state saved with this layer (``file``, ``access``, ``shape``, ``bootId``)."""
        state = self.extra.get("ramState")
        return state if isinstance(state, dict) else None

    def files(self) -> list[str]:
        """The names under ``data/`` this layer owns: its layer file and any RAM state files."""
        state = self.ram_state or {}
        names = [state.get(k) for k in ("file", "access")]
        # Only names of this layer's own files under data/ (a record never points elsewhere).
        return [self.file, *(n for n in names if isinstance(n, str) and n.startswith(f"{self.key}.") and "/" not in n)]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("last_used")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], last_used: float) -> LayerInfo:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "last_used"}
        return cls(**known, last_used=last_used)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class TempLayer:
    """A layer being written in ``tmp/``; its writer holds an exclusive lock on it until it is published or gone."""

    path: Path
    fd: int

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class Lease:
    """Shared locks on the records of a chain: pruning leaves these layers alone until :meth:`close`."""

    def __init__(self, fds: list[int]) -> None:
        self._fds = fds

    def close(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


class LayerStore:
    """Blocking operations on one layer directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index = root / "index"
        self.data = root / "data"
        self.bases = root / "bases"
        self.tmp = root / "tmp"
        self.digests = root / "digests"

    def ensure(self) -> None:
        for path in (self.root, self.index, self.data, self.bases, self.tmp, self.digests):
            path.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The store-wide lock (publication and pruning)."""
        self.ensure()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def record_path(self, key: str) -> Path:
        return self.index / f"{key}.json"

    def file_path(self, info: LayerInfo) -> Path:
        return self.data / info.file

    def base_path(self, digest: str) -> Path:
        return self.bases / digest

    # Reading -----------------------------------------------------------------------------------------------

    def get(self, key: str) -> LayerInfo | None:
        """The layer ``key`` if its record and file both exist."""
        if not _is_key(key):
            return None
        record = self.record_path(key)
        try:
            stat = record.stat()
            info = LayerInfo.from_json(json.loads(record.read_text()), stat.st_mtime)
        except (OSError, ValueError, TypeError):
            return None
        if info.key != key or not self.file_path(info).is_file():
            return None
        return info

    def layers(self) -> list[LayerInfo]:
        """Every complete layer, least recently used first."""
        if not self.index.is_dir():
            return []
        layers = [
            info
            for record in self.index.glob("*.json")
            if (info := self.get(record.name.removesuffix(".json"))) is not None
        ]
        return sorted(layers, key=lambda i: (i.last_used, i.key))

    def chain(self, key: str) -> list[LayerInfo] | None:
        """The layers from the chain's first to ``key``; ``None`` if any of them (or the base link) is missing."""
        layers: list[LayerInfo] = []
        current: str | None = key
        while current is not None:
            info = self.get(current)
            if info is None or len(layers) > 10_000:
                return None
            layers.append(info)
            current = info.parent
        layers.reverse()
        if not self.base_path(layers[0].base).exists():
            return None
        return layers

    def total_size(self) -> int:
        return sum(info.size for info in self.layers())

    # Using -------------------------------------------------------------------------------------------------

    def lease(self, keys: Iterable[str]) -> Lease | None:
        """Shared locks on the records of ``keys``; ``None`` if one of them has gone meanwhile."""
        fds: list[int] = []
        try:
            for key in keys:
                record = self.record_path(key)
                fd = os.open(record, os.O_RDONLY)
                fds.append(fd)
                fcntl.flock(fd, fcntl.LOCK_SH)
                # A pruner may have removed the record between open and lock: it must still be the same file.
                if os.fstat(fd).st_ino != record.stat().st_ino or self.get(key) is None:
                    raise FileNotFoundError(record)
        except OSError:
            Lease(fds).close()
            return None
        return Lease(fds)

    def touch(self, keys: Iterable[str]) -> None:
        """Mark layers as used now (their records' mtime)."""
        now = time.time()
        for key in keys:
            with contextlib.suppress(OSError):
                os.utime(self.record_path(key), (now, now))

    def link_base(self, digest: str, disk: Path) -> Path:
        """Point ``bases/<digest>`` at ``disk`` (whose content has that digest) and return the link."""
        self.ensure()
        link = self.base_path(digest)
        target = disk.resolve()
        with contextlib.suppress(OSError):
            if link.is_symlink() and link.readlink() == target:
                return link
        tmp = self.bases / f".{digest}.{secrets.token_hex(6)}"
        tmp.symlink_to(target)
        tmp.replace(link)
        return link

    # Writing -----------------------------------------------------------------------------------------------

    def new_temp(self, suffix: str) -> TempLayer:
        """A fresh path in ``tmp/``, locked by this process until published or discarded."""
        self.ensure()
        path = self.tmp / f"layer-{secrets.token_hex(8)}.{suffix}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return TempLayer(path, fd)

    def publish(self, temp: TempLayer, info: LayerInfo) -> Literal["stored", "exists"]:
        """Make ``temp`` the layer ``info.key``; ``"exists"`` (and ``temp`` dropped) if another build was first."""
        outcome, lease = self.publish_leased(temp, info)
        if lease is not None:
            lease.close()
        return outcome

    def publish_leased(
        self, temp: TempLayer, info: LayerInfo, extras: Sequence[tuple[TempLayer, str]] = ()
    ) -> tuple[Literal["stored", "exists"], Lease | None]:
        """:meth:`publish`, and a lease on the new layer taken before any pruner can see it. ``extras`` are more
        files of the layer (its RAM state: temporary, name under ``data/``), published with it (the record,
        written last, names them) and counted in its size."""
        files = [(temp, info.file), *extras]
        for part, _ in files:
            fsync_file(part.path)
        info.size = sum(part.path.stat().st_size for part, _ in files)
        try:
            with self.locked():
                if self.get(info.key) is not None:
                    return "exists", None
                for part, name in files:
                    final = self.data / name
                    with contextlib.suppress(FileNotFoundError):
                        final.unlink()  # a file without a record: left by a crash, used by nobody
                    os.link(part.path, final)
                _fsync_dir(self.data)
                record = self.index / f".{info.key}.{secrets.token_hex(6)}.tmp"
                with open(record, "w", encoding="utf-8") as fh:
                    json.dump(info.to_json(), fh, indent=1)
                    fh.flush()
                    os.fsync(fh.fileno())
                record.replace(self.record_path(info.key))
                _fsync_dir(self.index)
                return "stored", self.lease([info.key])
        finally:
            for part, _ in files:
                part.discard()

    # Removing ----------------------------------------------------------------------------------------------

    def prune(
        self, *, max_size: int | None = None, older_than: float | None = None, now: float | None = None
    ) -> list[LayerInfo]:
        """Remove layers unused for ``older_than`` seconds, then least recently used ones until the store holds at
        most ``max_size`` bytes; a layer goes with every layer built on it. Layers in use stay. Also removes what
        crashed builds left in ``tmp/`` and files without a record. Returns what was removed."""
        now = time.time() if now is None else now
        removed: list[LayerInfo] = []
        with self.locked():
            self._sweep()
            layers = self.layers()
            children: dict[str, list[LayerInfo]] = {}
            for info in layers:
                if info.parent is not None:
                    children.setdefault(info.parent, []).append(info)
            gone: set[str] = set()
            total = sum(info.size for info in layers)
            for info in layers:  # least recently used first
                if info.key in gone:
                    continue
                too_old = older_than is not None and now - info.last_used > older_than
                too_big = max_size is not None and total > max_size
                if not (too_old or too_big):
                    continue
                group = self._with_descendants(info, children, gone)
                if self._remove_group(group):
                    gone.update(i.key for i in group)
                    removed.extend(group)
                    total -= sum(i.size for i in group)
        return removed

    def _with_descendants(
        self, info: LayerInfo, children: dict[str, list[LayerInfo]], gone: set[str]
    ) -> list[LayerInfo]:
        group, queue = [], [info]
        while queue:
            current = queue.pop()
            if current.key in gone or current in group:
                continue
            group.append(current)
            queue.extend(children.get(current.key, []))
        return group

    def _remove_group(self, group: list[LayerInfo]) -> bool:
        """Remove every layer of ``group``, or none if one of them is in use."""
        fds: list[int] = []
        try:
            for info in group:
                fd = os.open(self.record_path(info.key), os.O_RDONLY)
                fds.append(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
            for info in group:  # record first: from then on nobody can start using the files
                with contextlib.suppress(FileNotFoundError):
                    self.record_path(info.key).unlink()
                for name in info.files():
                    with contextlib.suppress(FileNotFoundError):
                        (self.data / name).unlink()
            return True
        except OSError:
            return False
        finally:
            for fd in fds:
                os.close(fd)

    def sweep(self) -> list[Path]:
        """:meth:`_sweep` under the store lock (``aib gc``): what dead builds left, never a layer in use."""
        if not self.root.is_dir():
            return []
        with self.locked():
            return self._sweep()

    def _sweep(self) -> list[Path]:
        """Drop temporaries of dead writers and layer files without a record (called under the lock); return
        what was removed."""
        removed: list[Path] = []

        def remove(path: Path) -> None:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)

        for path in self.tmp.glob("layer-*"):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            finally:
                os.close(fd)
            remove(path)
        recorded = {p.name.removesuffix(".json") for p in self.index.glob("*.json")}
        for path in self.data.iterdir():
            if path.name.split(".", 1)[0] not in recorded:
                remove(path)
        for path in self.index.glob(".*.tmp"):
            remove(path)
        return removed
