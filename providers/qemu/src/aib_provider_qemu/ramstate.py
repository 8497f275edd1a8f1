"""RAM state of a build VM for the step cache: what identifies the VM it fits, and the access file kept with it.

A saved state (QMP ``migrate`` to a file, :mod:`aib_provider_qemu.layers`) resumes only in an identical VM: the
**shape** is the sha256 of the QEMU version and the build VM's command line with its per-run paths and port
replaced by fixed names (so vCPUs, memory, machine type, accelerator, NICs and network, disks, seed drive, kernel
and firmware all count). The resumed guest is the saved one: it accepts only the saving build's client key,
presents that build's host keys and still has its seed drive attached. The **access file** (created 0600 by the
step cache, never logged) holds them: the build user, the client's private key, the pinned host public keys and
the seed ISO (which holds the guest's private host keys).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aib_sdk.errors import BuildHostError

_VERSIONS: dict[str, str] = {}
_FIXED_PATHS = {
    "overlay": Path("os-disk.qcow2"),
    "serial_log": Path("serial.log"),
    "qmp_socket": Path("qmp.sock"),
}


def qemu_version(binary: str) -> str:
    """``<binary> --version``'s first line (cached per binary; sync, fast)."""
    if binary not in _VERSIONS:
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
            _VERSIONS[binary] = (out.stdout.splitlines() or ["unknown"])[0].strip()
        except (OSError, subprocess.SubprocessError):
            _VERSIONS[binary] = "unknown"
    return _VERSIONS[binary]


def shape_digest(version: str, command: list[str]) -> str:
    """The shape of a VM: sha256 of its QEMU version and its normalized command line."""
    return hashlib.sha256(json.dumps([version, command], separators=(",", ":")).encode()).hexdigest()


def normalized(plan: dict[str, Any]) -> dict[str, Any]:
    """``qemu_command`` keyword arguments with the per-run paths, port and name replaced by fixed values."""
    fixed = {**plan, **_FIXED_PATHS, "port": 0, "name": "aib"}
    if plan.get("seed_iso") is not None:
        fixed["seed_iso"] = Path("seed.iso")
    if plan.get("ovmf_vars") is not None:
        fixed["ovmf_vars"] = Path("OVMF_VARS.fd")
    fixed["data_disks"] = [Path(f"data-{i}.qcow2") for i, _ in enumerate(plan.get("data_disks") or [])]
    fixed["image"] = dataclasses.replace(plan["image"], saved_state=None, path=Path("disk"), sha256=None)
    return fixed


@dataclass(frozen=True)
class Access:
    """What reconnecting to a resumed guest needs (secrets: never logged)."""

    user: str
    client_key: bytes
    host_keys: list[str]
    seed: bytes


def write_access(path: Path, access: Access) -> None:
    """Write ``access`` into ``path`` (an existing 0600 file, truncated; sync: call in a worker thread)."""
    data = {
        "user": access.user,
        "clientKey": access.client_key.decode(),
        "hostKeys": access.host_keys,
        "seed": base64.b64encode(access.seed).decode(),
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()


def read_access(path: Path) -> Access:
    """The access file at ``path``; :class:`BuildHostError` (naming no content) when it is unreadable or damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        access = Access(
            user=str(data["user"]),
            client_key=str(data["clientKey"]).encode(),
            host_keys=[str(k) for k in data["hostKeys"]],
            seed=base64.b64decode(str(data["seed"]), validate=True),
        )
    except Exception:  # its content may be secret: the message names only the file
        raise BuildHostError(f"its access file {path.name} is unreadable or damaged") from None
    if not access.user or not access.client_key or not access.host_keys or not access.seed:
        raise BuildHostError(f"its access file {path.name} is incomplete")
    return access
