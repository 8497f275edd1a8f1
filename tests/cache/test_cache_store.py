"""The layer store on its own: keys, atomic publication, races, leases, LRU pruning and crash leftovers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from aib_sdk.cache.keys import Input, canonical_json, root_key, step_key
from aib_sdk.cache.settings import CacheSettings, parse_age, parse_size
from aib_sdk.cache.store import LayerInfo, LayerStore
from aib_sdk.config import Config
from aib_sdk.errors import UsageError


def _key(n: int) -> str:
    return f"{n:064x}"


def _publish(store: LayerStore, key: str, parent: str | None, data: bytes = b"layer", **extra: object) -> str:
    temp = store.new_temp("raw")
    temp.path.write_bytes(data)
    info = LayerInfo(key=key, parent=parent, base="b" * 64, file=f"{key}.raw", format="raw", size=0, created=1.0)
    for name, value in extra.items():
        setattr(info, name, value)
    return store.publish(temp, info)


def _store(tmp_path: Path) -> LayerStore:
    store = LayerStore(tmp_path / "layers")
    store.ensure()
    (tmp_path / "base.raw").write_bytes(b"base")
    store.link_base("b" * 64, tmp_path / "base.raw")
    return store


def test_keys_cover_every_input_and_ignore_mapping_order() -> None:
    root = root_key(source={"sha256": "a", "exactVersion": "1"}, host={"vmSize": "x"})
    assert root == root_key(host={"vmSize": "x"}, source={"exactVersion": "1", "sha256": "a"})
    assert root != root_key(source={"sha256": "b", "exactVersion": "1"}, host={"vmSize": "x"})
    assert root != root_key(source={"sha256": "a", "exactVersion": "1"}, host={"vmSize": "y"})
    spec = {"type": "Shell", "scriptUri": "https://x/s.sh"}
    one = step_key(root, type_name="Shell", spec=spec, inputs=[Input("https://x/s.sh", "1" * 64)])
    assert one == step_key(root, type_name="Shell", spec=dict(spec), inputs=[Input("https://x/s.sh", "1" * 64)])
    assert one != step_key(root, type_name="Shell", spec=spec, inputs=[Input("https://x/s.sh", "2" * 64)])
    assert one != step_key("0" * 64, type_name="Shell", spec=spec, inputs=[Input("https://x/s.sh", "1" * 64)])
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_publish_is_atomic_and_never_replaces_a_layer(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert _publish(store, _key(1), None, b"first") == "stored"
    assert _publish(store, _key(1), None, b"second") == "exists"
    info = store.get(_key(1))
    assert info is not None and store.file_path(info).read_bytes() == b"first" and info.size == 5
    assert list(store.tmp.iterdir()) == []  # both temporaries are gone


def test_concurrent_publishers_of_one_key_leave_one_intact_layer(tmp_path: Path) -> None:
    store = _store(tmp_path)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def publish(n: int) -> None:
        temp = LayerStore(store.root).new_temp("raw")
        temp.path.write_bytes(bytes([n]) * 100_000)
        barrier.wait()
        info = LayerInfo(
            key=_key(7), parent=None, base="b" * 64, file=f"{_key(7)}.raw", format="raw", size=0, created=0
        )
        outcomes.append(LayerStore(store.root).publish(temp, info))

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["exists"] * 7 + ["stored"]
    info = store.get(_key(7))
    assert info is not None
    data = store.file_path(info).read_bytes()
    assert len(data) == 100_000 and len(set(data)) == 1  # one writer's bytes, whole
    assert list(store.tmp.iterdir()) == []


def test_chain_needs_every_layer_and_the_base(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _publish(store, _key(1), None)
    _publish(store, _key(2), _key(1))
    chain = store.chain(_key(2))
    assert chain is not None and [i.key for i in chain] == [_key(1), _key(2)]
    store.file_path(chain[0]).unlink()
    assert store.chain(_key(2)) is None
    assert store.get(_key(1)) is None


def test_prune_by_size_removes_least_recently_used_with_descendants(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _publish(store, _key(1), None, b"x" * 100)
    _publish(store, _key(2), _key(1), b"x" * 100)
    _publish(store, _key(3), None, b"x" * 100)
    old, new = time.time() - 1000, time.time()
    for key, stamp in ((_key(1), old), (_key(2), new), (_key(3), old + 10)):
        os.utime(store.record_path(key), (stamp, stamp))
    # 1 is least recently used: it goes with 2 (built on it) although 2 was used recently.
    removed = store.prune(max_size=150)
    assert {i.key for i in removed} == {_key(1), _key(2)}
    assert [i.key for i in store.layers()] == [_key(3)]
    assert store.prune(older_than=500) and store.layers() == []


def test_prune_leaves_leased_layers_alone(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _publish(store, _key(1), None)
    _publish(store, _key(2), _key(1))
    lease = store.lease([_key(1), _key(2)])
    assert lease is not None
    assert store.prune(max_size=0) == []
    assert store.get(_key(2)) is not None
    lease.close()
    assert len(store.prune(max_size=0)) == 2
    assert store.lease([_key(1)]) is None  # gone: a lease cannot be taken any more


def test_ram_state_is_published_with_its_layer_counted_and_pruned_with_it(tmp_path: Path) -> None:
    store = _store(tmp_path)
    layer, ram, access = store.new_temp("raw"), store.new_temp("ram"), store.new_temp("access")
    layer.path.write_bytes(b"layer")
    ram.path.write_bytes(b"r" * 100)
    access.path.write_bytes(b"{}")
    key = _key(1)
    info = LayerInfo(key=key, parent=None, base="b" * 64, file=f"{key}.raw", format="raw", size=0, created=1.0)
    info.extra["ramState"] = {"file": f"{key}.ram", "access": f"{key}.access", "shape": "s", "bootId": "b"}
    outcome, lease = store.publish_leased(layer, info, [(ram, f"{key}.ram"), (access, f"{key}.access")])
    assert outcome == "stored" and lease is not None
    lease.close()
    stored = store.get(key)
    assert stored is not None and stored.size == 107 and stored.files() == [f"{key}.raw", f"{key}.ram", f"{key}.access"]
    assert (store.data / f"{key}.access").stat().st_mode & 0o777 == 0o600  # created 0600, linked as is
    assert list(store.tmp.iterdir()) == [] and store.total_size() == 107
    # A record naming files outside the layer's own is never followed.
    stored.extra["ramState"]["file"] = "../../elsewhere"
    assert stored.files() == [f"{key}.raw", f"{key}.access"]
    assert [i.key for i in store.prune(max_size=0)] == [key]
    assert list(store.data.iterdir()) == []


def test_crash_leftovers_are_never_used_and_are_swept(tmp_path: Path) -> None:
    store = _store(tmp_path)
    # A writer that died mid-layer: a temporary nobody holds, and a data file whose record was never written.
    (store.tmp / "layer-deadbeef.raw").write_bytes(b"half a layer")
    (store.tmp / "layer-deadbeef.ram").write_bytes(b"a whole RAM state")
    (store.data / f"{_key(9)}.raw").write_bytes(b"half a layer")
    (store.data / f"{_key(9)}.ram").write_bytes(b"RAM state of a layer never recorded")
    assert store.get(_key(9)) is None and store.chain(_key(9)) is None
    live = store.new_temp("raw")  # a writer still at work keeps its temporary
    store.prune(older_than=10**9)
    assert sorted(p.name for p in store.tmp.iterdir()) == [live.path.name]
    assert list(store.data.iterdir()) == []
    live.discard()


def test_settings_and_parsers(tmp_path: Path) -> None:
    assert parse_size("500M") == 500 * 1024**2 and parse_size("1.5GiB") == int(1.5 * 1024**3) and parse_size("0") == 0
    assert parse_age("7d") == 7 * 86400 and parse_age("1h30m") == 5400 and parse_age("90") == 90
    for bad in ("lots", "-1G", "5X"):
        with pytest.raises(UsageError):
            parse_size(bad)
    with pytest.raises(UsageError):
        parse_age("soon")
    default = CacheSettings.from_config(Config({}, {"AIB_CACHE": str(tmp_path)}))
    assert default.directory == tmp_path / "layers" and default.max_size == 20 * 1024**3 and default.enabled
    assert default.ram_state
    assert not CacheSettings.from_config(Config({"cache": {"ram_state": False}}, {})).ram_state
    assert not CacheSettings.from_config(Config({}, {"AIB_CACHE_RAM_STATE": "false"})).ram_state
    custom = CacheSettings.from_config(
        Config({"cache": {"max_size": "1G", "enabled": False}}, {"AIB_CACHE_DIR": str(tmp_path / "x")})
    )
    assert custom.directory == tmp_path / "x" and custom.max_size == 1024**3 and not custom.enabled
