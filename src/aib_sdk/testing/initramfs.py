"""The tiny test guest's initramfs: loads the virtio disk driver, then hands over to the root disk's own init.

The guest's kernel has NVMe built in but virtio-blk only as a module, and QEMU 7.2 cannot migrate an NVMe
controller (so a VM on NVMe cannot keep its RAM state). With this initramfs the guest boots from a virtio disk too:
its ``/init`` (a static busybox) loads the virtio modules, finds the filesystem labelled ``aibroot`` (whatever the
bus) and ``switch_root``s to ``/sbin/aib-init``. Written as an uncompressed ``newc`` cpio archive, no tools needed.
"""

from __future__ import annotations

import stat
from pathlib import Path

ROOT_LABEL = "aibroot"

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /dev /proc /sys /newroot
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /lib/order); do insmod /lib/$m.ko; done
root=""
n=0
while [ $n -lt 300 ]; do
  root=$(findfs LABEL=__LABEL__ 2>/dev/null) && break
  usleep 50000; n=$((n+1))
done
[ -n "$root" ] || { echo "aib initramfs: no disk labelled __LABEL__"; sleep 5; poweroff -f; }
mount -t ext4 -o rw "$root" /newroot || { echo "aib initramfs: cannot mount $root"; sleep 5; poweroff -f; }
umount /sys /proc /dev
exec switch_root /newroot /sbin/aib-init
""".replace("__LABEL__", ROOT_LABEL)


def _entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(f"{value:08x}".encode() for value in fields) + name.encode() + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def write_initramfs(out: Path, busybox: Path, modules: list[tuple[str, Path]]) -> None:
    """Write the initramfs: ``busybox`` (static), the kernel ``modules`` (name, file) in load order, ``/init``."""
    parts: list[bytes] = []
    files: list[tuple[str, int, bytes]] = [
        ("bin", stat.S_IFDIR | 0o755, b""),
        ("lib", stat.S_IFDIR | 0o755, b""),
        ("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()),
        ("lib/order", stat.S_IFREG | 0o644, "".join(f"{name}\n" for name, _ in modules).encode()),
        ("init", stat.S_IFREG | 0o755, INIT.encode()),
    ]
    files += [(f"lib/{name}.ko", stat.S_IFREG | 0o644, path.read_bytes()) for name, path in modules]
    for ino, (name, mode, data) in enumerate(files, start=1):
        parts.append(_entry(name, mode, data, ino))
    parts.append(_entry("TRAILER!!!", 0, b"", 0))
    out.write_bytes(b"".join(parts))
