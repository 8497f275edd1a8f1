"""Build credentials and the cloud-init NoCloud seed that hands them to the guest.

Every build gets a fresh ed25519 client key and fresh SSH host keys (ed25519, RSA and ECDSA: dropbear needs all
three for asyncssh's key exchange; OpenSSH uses them all). The host keys go into the seed's ``ssh_keys``, so the
host key the build connects to is known in advance and pinned. The seed is an ISO9660 volume labelled ``cidata``
(Rock Ridge and Joliet names ``user-data``/``meta-data``), written with pycdlib.

The ``user-data`` layout is fixed (two-space indents, private keys as ``|`` block scalars) because the tiny test
guest's init parses it with awk; it is ordinary cloud-config for cloud-init. The seed also holds an ``aib-agent``
marker file, read by the Debian base's build-boot agent (:mod:`aib_provider_qemu.debian.agent`).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

if TYPE_CHECKING:
    import asyncssh

AGENT_MARKER = "aib-agent"
"""An extra seed file: images with aib-sdk's build-boot agent (the Debian base) provision from the seed themselves
and skip cloud-init for that boot; every other image ignores it."""
HOST_KEY_TYPES: dict[str, str] = {"ed25519": "ssh-ed25519", "rsa": "ssh-rsa", "ecdsa": "ecdsa-sha2-nistp256"}


@dataclass(frozen=True)
class BuildKeys:
    """A build's client key and the guest's host keys (private keys in OpenSSH format)."""

    client: asyncssh.SSHKey
    host: dict[str, asyncssh.SSHKey]

    @property
    def client_public(self) -> str:
        return bytes(self.client.export_public_key("openssh")).decode().strip()

    @property
    def host_public(self) -> list[str]:
        return [bytes(k.export_public_key("openssh")).decode().strip() for k in self.host.values()]


def _generate() -> BuildKeys:
    import asyncssh  # imported on first use: registering the provider does not load it

    client = asyncssh.generate_private_key("ssh-ed25519", comment="aib-build")
    host = {
        name: asyncssh.generate_private_key(alg, comment=f"aib-host-{name}") for name, alg in HOST_KEY_TYPES.items()
    }
    return BuildKeys(client, host)


async def generate_keys() -> BuildKeys:
    """Fresh client and host keys (RSA generation runs in a worker thread)."""
    return await anyio.to_thread.run_sync(_generate)


def user_data(user: str, keys: BuildKeys) -> str:
    """The cloud-config creating ``user`` (passwordless sudo, the client key) and installing the host keys."""
    lines = [
        "#cloud-config",
        "users:",
        f"  - name: {user}",
        "    gecos: aib-sdk build user",
        "    shell: /bin/sh",
        '    sudo: "ALL=(ALL) NOPASSWD:ALL"',
        "    lock_passwd: true",
        "    ssh_authorized_keys:",
        f"      - {keys.client_public}",
        "disable_root: true",
        "ssh_pwauth: false",
        "ssh_deletekeys: true",
        "ssh_keys:",
    ]
    for name, key in keys.host.items():
        private = bytes(key.export_private_key("openssh")).decode().strip().splitlines()
        lines.append(f"  {name}_private: |")
        lines += [f"    {line}" for line in private]
        lines.append(f"  {name}_public: {bytes(key.export_public_key('openssh')).decode().strip()}")
    return "\n".join(lines) + "\n"


def meta_data(instance_id: str, hostname: str = "aib-build") -> str:
    return f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"


def _open_private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def write_private(iso: Any, path: Path) -> None:
    """Write a pycdlib ``iso`` to ``path``, created 0600: seeds hold secrets, never readable by others, not even
    briefly (sync; call in a worker thread)."""
    with open(path, "wb", opener=_open_private) as fh:
        iso.write_fp(fh)
    path.chmod(0o600)  # a file that already existed keeps its mode on open


def _write_iso(path: Path, files: dict[str, str]) -> None:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    try:
        for name, text in files.items():
            data = text.encode()
            short = name.replace("-", "").upper()[:8]
            iso.add_fp(io.BytesIO(data), len(data), f"/{short}.;1", rr_name=name, joliet_path=f"/{name}")
        write_private(iso, path)
    finally:
        iso.close()


async def write_seed(path: Path, *, user: str, keys: BuildKeys, instance_id: str) -> None:
    """Write the NoCloud seed ISO to ``path`` (mode 0600: it holds private host keys)."""
    files = {"user-data": user_data(user, keys), "meta-data": meta_data(instance_id), AGENT_MARKER: "1\n"}
    await anyio.to_thread.run_sync(_write_iso, path, files)
