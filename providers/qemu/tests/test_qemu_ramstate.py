"""RAM state bookkeeping without a VM: the shape digest and the access file (the VM tests are in test_qemu_cache)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from aib_provider_qemu import ramstate
from aib_provider_qemu.host import qemu_command
from aib_provider_qemu.network import Network
from aib_sdk.artifacts import DiskImage, SavedState
from aib_sdk.errors import BuildHostError


def _plan(run: Path, **changes: Any) -> dict[str, Any]:
    image = DiskImage(path=run / "layer.qcow2", format="qcow2", kernel=Path("/k/vmlinuz"), kernel_args="console=ttyS0")
    plan: dict[str, Any] = {
        "binary": "qemu-system-x86_64",
        "accel": "tcg",
        "cpus": 1,
        "memory_mib": 512,
        "image": image,
        "overlay": run / "os-disk.qcow2",
        "data_disks": [],
        "seed_iso": run / "seed.iso",
        "serial_log": run / "serial.log",
        "qmp_socket": run / "qmp.sock",
        "name": f"aib-{run.name}",
        "guest_port": None,
        "ovmf_vars": None,
        "nic_model": None,
        "network": Network(),
    }
    plan.update(changes)
    return plan


def _shape(plan: dict[str, Any]) -> str:
    return ramstate.shape_digest("QEMU 7.2", qemu_command(**ramstate.normalized(plan)))


def test_the_shape_ignores_per_run_paths_and_counts_what_the_guest_sees(tmp_path: Path) -> None:
    one, two = _plan(tmp_path / "vm-a"), _plan(tmp_path / "vm-b")
    saved = dataclasses.replace(
        two["image"], saved_state=SavedState(Path("s"), Path("a"), "x", "b", "k"), path=Path("/elsewhere")
    )
    assert _shape(one) == _shape({**two, "image": saved})
    assert _shape(one) != _shape(_plan(tmp_path / "vm-a", memory_mib=384))
    assert _shape(one) != _shape(_plan(tmp_path / "vm-a", cpus=2))
    assert _shape(one) != _shape(_plan(tmp_path / "vm-a", seed_iso=None))
    assert _shape(one) != _shape(_plan(tmp_path / "vm-a", nic_model="e1000"))
    assert _shape(one) != ramstate.shape_digest("QEMU 8.2", qemu_command(**ramstate.normalized(one)))


def test_the_access_file_round_trips_and_a_damaged_one_names_no_content(tmp_path: Path) -> None:
    path = tmp_path / "k.access"
    path.touch(mode=0o600)
    access = ramstate.Access(
        user="packer", client_key=b"PRIVATE-KEY-TEXT", host_keys=["ssh-ed25519 AAAA"], seed=b"\0iso"
    )
    ramstate.write_access(path, access)
    assert ramstate.read_access(path) == access and path.stat().st_mode & 0o777 == 0o600
    path.write_text(path.read_text()[:-20])
    with pytest.raises(BuildHostError) as caught:
        ramstate.read_access(path)
    assert "PRIVATE-KEY-TEXT" not in str(caught.value) and caught.value.__cause__ is None
    assert caught.value.__suppress_context__
