"""The Debian root tree: ``debootstrap`` from the mirror, then the files that make it a cloud image.

The image takes its build user, SSH key and host keys from a NoCloud seed (``datasource_list: [NoCloud, None]``),
as real cloud images do; it keeps no host keys, machine id or password of its own.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.to_thread

from aib_provider_qemu.debian import agent
from aib_provider_qemu.debian.mirror import release_date, version_of
from aib_provider_qemu.debian.proc import LineSink, run_logged
from aib_sdk.errors import SourceError

SUITE = "bookworm"
PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "cloud-init",
    "cloud-guest-utils",
    "sudo",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "ifupdown",
    "isc-dhcp-client",
    "netbase",
    "iproute2",
    "procps",
    # debootstrap does not resolve virtual packages: python3-cryptography needs python3-cffi-backend-api-*.
    "python3-cffi-backend",
)
KERNEL_ARGS = "console=tty0 console=ttyS0,115200n8"

CLOUD_CFG = """\
# Written by aib-sdk: take the user, SSH key and host keys from a NoCloud seed only.
datasource_list: [ NoCloud, None ]
ssh_pwauth: false
disable_root: true
# /etc/hosts names the instance's hostname (from the seed), so sudo can resolve it.
manage_etc_hosts: true
# Debian's locale-gen ignores its argument, so cloud-init's default locale (en_US.UTF-8, not generated in this
# minimal image) fails its locale module and the first boot ends in "status: error". C.UTF-8 is built into glibc.
locale: C.UTF-8
"""


async def debootstrap(root: Path, mirror: str, debs: Path, log: LineSink) -> None:
    """``debootstrap --variant=minbase`` with :data:`PACKAGES` into ``root``; ``debs`` caches downloaded packages."""
    await anyio.Path(debs).mkdir(parents=True, exist_ok=True)
    await run_logged(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            f"--cache-dir={debs}",
            "--merged-usr",
            SUITE,
            root,
            mirror,
        ],
        log,
        what="debootstrap",
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"},
    )


def bootstrapped_version(root: Path) -> str | None:
    """The exactVersion of the Release file debootstrap actually used (sync)."""
    lists = root / "var" / "lib" / "apt" / "lists"
    for name in (f"_dists_{SUITE}_Release", f"_dists_{SUITE}_InRelease"):
        for file in sorted(lists.glob(f"*{name}")):
            return version_of(release_date(file.read_text(encoding="utf-8", errors="replace")))
    return None


def configure(root: Path, fs_uuid: str, hostname: str = "debian") -> None:
    """Turn the bootstrapped tree into a cloud image (sync; call in a worker thread)."""
    etc = root / "etc"
    if not (root / "usr" / "bin" / "cloud-init").exists():
        raise SourceError("the bootstrapped tree has no cloud-init: debootstrap did not install the package list")
    (etc / "fstab").write_text(f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n", encoding="utf-8")
    (etc / "hostname").write_text(hostname + "\n", encoding="utf-8")
    (etc / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n", encoding="utf-8"
    )
    (etc / "cloud" / "cloud.cfg.d" / "90_aib_sdk.cfg").write_text(CLOUD_CFG, encoding="utf-8")
    interfaces = etc / "network" / "interfaces"
    interfaces.write_text("source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n", encoding="utf-8")
    # Every instance gets its own identity: no host keys, an empty machine-id (systemd makes one at boot).
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    (etc / "machine-id").write_text("", encoding="utf-8")
    dbus_id = root / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")
    for old in ("vmlinuz.old", "initrd.img.old"):
        link = root / old
        if link.is_symlink():
            link.unlink()
    agent.install(root)  # build boots skip cloud-init; the image's real first boot runs it as installed
    for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()
    for leftover in ("var/log/bootstrap.log", "var/cache/debconf/templates.dat-old"):
        (root / leftover).unlink(missing_ok=True)
