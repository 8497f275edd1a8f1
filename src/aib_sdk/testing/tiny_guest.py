"""The tiny test guest: a bootable Linux disk made from Debian packages alone, in seconds.

Ingredients (``apt-get download`` from the machine's configured mirror, unpacked with ``dpkg-deb -x``): the kernel
behind ``linux-image-cloud-amd64`` (booted directly with a small initramfs, :mod:`aib_sdk.testing.initramfs`, that
loads the virtio disk driver: the root is a virtio disk, or NVMe, which the kernel drives without it),
``busybox-static``, ``dropbear-bin``, OpenSSH's ``sftp-server`` (at ``/usr/lib/sftp-server``, where dropbear looks)
and the shared libraries they need.
The root filesystem is an ext4 image made with ``mkfs.ext4 -d`` (no mount, no loop device).

Its init (:data:`INIT_SCRIPT`) loads the virtio modules, configures QEMU user-mode networking statically, reads the
NoCloud seed (an ISO9660 volume labelled ``cidata``) itself — the build user, its authorized keys and the injected
SSH host keys (converted to dropbear's format) — starts dropbear and prints :data:`READY_LINE` on the serial
console. A ``sudo`` shim (a setuid busybox ``su``) lets AIB's ``sudo …`` lines run. The result is cached under
``<cache>/tiny-guest/<key>`` where the key digests the package versions and this builder's scripts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from aib_sdk.errors import SourceError
from aib_sdk.testing import initramfs

BUILDER_VERSION = "8"
READY_LINE = "AIB-TINY-GUEST-READY"
SPEC: dict[str, str] = {
    "type": "PlatformImage",
    "publisher": "aib-sdk",
    "offer": "tiny-test-guest",
    "sku": "busybox",
    "version": "latest",
}
"""The template ``source`` that selects the tiny test guest."""

KERNEL_META = "linux-image-cloud-amd64"
ROOT_PACKAGES = ("busybox-static", "dropbear-bin", "openssh-sftp-server")
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk")
"""Modules the initramfs loads before it looks for the root disk."""
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "virtio-rng", "virtio_console", "isofs")
"""Kernel modules the guest loads at boot (their dependencies, read from each module's modinfo, come first)."""
KERNEL_ARGS = "root=/dev/nvme0n1 rw rootfstype=ext4 console=ttyS0 init=/sbin/aib-init random.trust_cpu=on quiet"
DISK_HEADROOM = 96 * 1024 * 1024

INIT_SCRIPT = r"""#!/bin/busybox sh
# PID 1 of the aib-sdk tiny test guest.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=755 tmpfs /run
mount -o remount,rw /
chmod 1777 /tmp
if [ ! -e /etc/.aib-owned ]; then
  chown -R 0:0 /bin /sbin /usr /lib /lib64 /etc /root 2>/dev/null
  : > /etc/.aib-owned
fi
chmod 4755 /bin/busybox-suid
# poweroff/reboot signal PID 1: flush, ask everything to stop, wait only until it has (a step's wrapper records an
# orderly shutdown on SIGTERM; at most 15 s, as its flush can take seconds on a busy host), flush again, and go.
settle() {
  usleep 500000
  n=0
  while [ $n -lt 145 ]; do
    busy=""
    for d in /proc/[0-9]*; do [ "${d#/proc/}" != 1 ] && [ -e $d/exe ] && busy=1 && break; done
    [ -z "$busy" ] && return
    usleep 100000; n=$((n+1))
  done
}
trap 'sync; kill -TERM -1; settle; sync; reboot -f' TERM
trap 'sync; kill -TERM -1; settle; sync; poweroff -f' USR1 USR2
for m in $(cat /lib/modules/aib/order); do
  [ -d /sys/module/$(echo $m | tr - _) ] || insmod /lib/modules/aib/$m.ko
done
hostname -F /etc/hostname
ip link set lo up
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "nameserver 10.0.2.3" > /etc/resolv.conf

BUILD_USER=""
seed=""
# A disk baked for static access (user, key and host keys on it: /etc/aib-static) reads no seed.
[ -e /etc/aib-static ] || for i in 1 2 3 4 5 6 7 8 9 10; do
  seed=$(findfs LABEL=cidata 2>/dev/null) && break; sleep 0.2
done
if [ -n "$seed" ] && mkdir -p /run/seed && mount -t iso9660 -o ro "$seed" /run/seed; then
  UD=/run/seed/user-data
  BUILD_USER=$(awk '/^  - name: /{print $3; exit}' $UD)
  for t in rsa ecdsa ed25519; do
    awk -v k="  ${t}_private: |" '$0==k{f=1;next} f&&/^    /{sub(/^    /,""); print; next} {f=0}' $UD > /run/hostkey
    if [ -s /run/hostkey ]; then
      dropbearconvert openssh dropbear /run/hostkey /etc/dropbear/dropbear_${t}_host_key >/dev/null 2>&1
    fi
    rm -f /run/hostkey
  done
fi
for t in rsa ecdsa ed25519; do
  k=/etc/dropbear/dropbear_${t}_host_key
  [ -s $k ] || dropbearkey -t $t -f $k >/dev/null 2>&1
done
if [ -n "$BUILD_USER" ]; then
  grep -q "^$BUILD_USER:" /etc/passwd || {
    echo "$BUILD_USER:*:1000:1000:aib build user:/home/$BUILD_USER:/bin/sh" >> /etc/passwd
    echo "$BUILD_USER:x:1000:" >> /etc/group
  }
  H=/home/$BUILD_USER
  mkdir -p $H/.ssh
  awk '/^    ssh_authorized_keys:/{f=1;next} f&&/^      - /{sub(/^      - /,""); print; next} {f=0}' \
    $UD > $H/.ssh/authorized_keys
  chown -R 1000:1000 $H
  chmod 700 $H/.ssh
  chmod 600 $H/.ssh/authorized_keys
  umount /run/seed
fi
dropbear -s -w -r /etc/dropbear/dropbear_rsa_host_key -r /etc/dropbear/dropbear_ecdsa_host_key \
  -r /etc/dropbear/dropbear_ed25519_host_key -p 22
echo "__READY__ $(cat /proc/sys/kernel/random/boot_id)"
# A trapped signal interrupts ``wait`` at once (a foreground ``sleep`` would delay it until the sleep ends).
while :; do sleep 3600 & wait $!; done
"""

SUDO_SHIM = r"""#!/bin/sh
# sudo shim of the aib-sdk tiny test guest: runs a command as root through the setuid busybox su.
while [ $# -gt 0 ]; do
  case "$1" in
    -u) [ "$2" = root ] || { echo "sudo shim: only -u root is supported" >&2; exit 1; }; shift 2 ;;
    -E|-H|-n|-S|-k|-i|--preserve-env|--preserve-env=*|--login) shift ;;
    --) shift; break ;;
    -*) echo "sudo shim: unsupported option $1" >&2; exit 1 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || set -- /bin/sh
if [ "$(id -u)" = 0 ]; then exec "$@"; fi
exec /bin/busybox-suid su -s /bin/sh -c 'PATH=/usr/sbin:/usr/bin:/sbin:/bin; export PATH; exec "$@"' -- root sudo "$@"
"""

ETC_FILES: dict[str, str] = {
    "passwd": "root::0:0:root:/root:/bin/sh\n",
    "group": "root:x:0:\ntty:x:5:\n",
    "shells": "/bin/sh\n",
    "hostname": "aib-tiny\n",
    "hosts": "127.0.0.1 localhost aib-tiny\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
    "profile": "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n",
    "machine-id": "",
}


@dataclass(frozen=True)
class TinyGuest:
    """A built tiny guest: the root disk (raw ext4), the kernel to boot directly, and what it was made of."""

    disk: Path
    kernel: Path
    kernel_args: str
    version: str
    packages: dict[str, str]
    ready_line: str = READY_LINE
    initrd: Path | None = None


@dataclass(frozen=True)
class _Package:
    name: str
    version: str
    arch: str
    depends: tuple[str, ...]

    @property
    def deb_name(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


async def _run(args: Sequence[str], *, cwd: Path | None = None) -> str:
    result = await anyio.run_process(list(args), cwd=cwd, check=False)
    if result.returncode != 0:
        err = result.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise SourceError(f"tiny guest: {' '.join(args[:3])} … failed: {' | '.join(err)}")
    return result.stdout.decode(errors="replace")


def _parse_stanzas(text: str) -> dict[str, _Package]:
    found: dict[str, _Package] = {}
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" not in fields or fields["Package"] in found:
            continue
        deps: list[str] = []
        for field in ("Pre-Depends", "Depends"):
            for alt in filter(None, (d.strip() for d in fields.get(field, "").split(","))):
                deps.append(alt.split("|")[0].split("(")[0].split(":")[0].strip())
        found[fields["Package"]] = _Package(
            fields["Package"], fields.get("Version", ""), fields.get("Architecture", "amd64"), tuple(deps)
        )
    return found


async def _show(names: Iterable[str]) -> dict[str, _Package]:
    names = sorted(set(names))
    if not names:
        return {}
    text = await _run(["apt-cache", "show", "--no-all-versions", *names])
    found = _parse_stanzas(text)
    missing = [n for n in names if n not in found]
    if missing:
        raise SourceError(f"tiny guest: apt knows no package {', '.join(missing)} (run apt-get update?)")
    return found


def _is_library(name: str) -> bool:
    return name.startswith("lib") or name == "zlib1g"


APT_STATE = (Path("/var/lib/apt/lists"), Path("/etc/apt"))


def _apt_state_digest() -> str:
    """Changes whenever apt's package lists or sources change (``apt-get update``, a new mirror)."""
    h = hashlib.sha256()
    for top in APT_STATE:
        for dirpath, _dirs, files in os.walk(top):
            for name in sorted(files):
                try:
                    st = (Path(dirpath) / name).stat()
                except OSError:
                    continue
                h.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


async def resolve_packages(cache_dir: Path | None = None) -> tuple[_Package, list[_Package]]:
    """The real kernel package and the root filesystem's packages with their library closure.

    With ``cache_dir``, the answer is remembered until apt's package lists change (apt-cache is slow on a
    busy machine).
    """
    memo: Path | None = None
    if cache_dir is not None:
        state = await anyio.to_thread.run_sync(_apt_state_digest)
        memo = cache_dir / "tiny-guest" / f"resolved-{state}-{BUILDER_VERSION}.json"
        try:
            data = json.loads(await anyio.Path(memo).read_text())
            return _from_json(data["kernel"]), [_from_json(p) for p in data["packages"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    kernel, packages = await _resolve_with_apt()
    if memo is not None:
        data = {"kernel": _as_json(kernel), "packages": [_as_json(p) for p in packages]}
        await anyio.Path(memo.parent).mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        await anyio.Path(tmp).write_text(json.dumps(data))
        await anyio.Path(tmp).replace(memo)
    return kernel, packages


def _from_json(d: dict[str, object]) -> _Package:
    deps = d["depends"]
    assert isinstance(deps, list)
    return _Package(str(d["name"]), str(d["version"]), str(d["arch"]), tuple(str(x) for x in deps))


def _as_json(p: _Package) -> dict[str, object]:
    return {"name": p.name, "version": p.version, "arch": p.arch, "depends": list(p.depends)}


async def _resolve_with_apt() -> tuple[_Package, list[_Package]]:
    meta = (await _show([KERNEL_META]))[KERNEL_META]
    kernel_name = next((d for d in meta.depends if d.startswith("linux-image-")), None)
    if kernel_name is None:
        raise SourceError(f"tiny guest: {KERNEL_META} depends on no linux-image package")
    kernel = (await _show([kernel_name]))[kernel_name]
    packages: dict[str, _Package] = {}
    todo = set(ROOT_PACKAGES)
    while todo:
        batch = await _show(todo)
        packages.update(batch)
        todo = {d for p in batch.values() for d in p.depends if _is_library(d) and d not in packages}
    return kernel, sorted(packages.values(), key=lambda p: p.name)


def cache_key(kernel: _Package, packages: Sequence[_Package]) -> str:
    """Digest of everything the disk is made of: package versions and this builder's scripts."""
    h = hashlib.sha256()
    h.update(BUILDER_VERSION.encode())
    for p in [kernel, *packages]:
        h.update(f"{p.name}={p.version}/{p.arch}\n".encode())
    for text in (
        INIT_SCRIPT,
        initramfs.INIT,
        SUDO_SHIM,
        KERNEL_ARGS,
        " ".join(MODULES),
        json.dumps(ETC_FILES, sort_keys=True),
    ):
        h.update(text.encode())
    return h.hexdigest()[:16]


async def _download(packages: Sequence[_Package], debs: Path, scratch: Path) -> None:
    """Fetch the missing .debs into ``scratch``, then move each into the shared ``debs`` cache atomically."""
    await anyio.Path(debs).mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not (debs / p.deb_name).is_file()]
    if not missing:
        return
    await anyio.Path(scratch).mkdir(parents=True, exist_ok=True)
    await _run(["apt-get", "download", "-q", *(f"{p.name}={p.version}" for p in missing)], cwd=scratch)
    for p in missing:
        if not (scratch / p.deb_name).is_file():
            raise SourceError(f"tiny guest: apt-get download did not produce {p.deb_name}")
        await anyio.Path(scratch / p.deb_name).replace(debs / p.deb_name)


def _assemble(root: Path, kernel_tree: Path, out: Path) -> Path:
    """Lay out the root filesystem (runs in a worker thread); returns the kernel image path."""
    shutil.rmtree(root / "usr" / "share", ignore_errors=True)
    for d in (
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "root",
        "home",
        "mnt",
        "var/log",
        "etc/dropbear",
        "lib/modules/aib",
        "usr/sbin",
        "usr/bin",
        "sbin",
        "bin",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    sftp = root / "usr" / "lib" / "sftp-server"
    if not sftp.exists():
        shutil.copy2(root / "usr" / "lib" / "openssh" / "sftp-server", sftp)
    busybox = root / "bin" / "busybox"
    shutil.copy2(busybox, root / "bin" / "busybox-suid")
    (root / "bin" / "busybox-suid").chmod(0o4755)
    for name, text in ETC_FILES.items():
        (root / "etc" / name).write_text(text)
    init = root / "sbin" / "aib-init"
    init.write_text(INIT_SCRIPT.replace("__READY__", READY_LINE))
    init.chmod(0o755)
    sudo = root / "usr" / "bin" / "sudo"
    sudo.write_text(SUDO_SHIM)
    sudo.chmod(0o755)
    (root / "tmp").chmod(0o1777)
    modules = {p.stem: p for p in (kernel_tree / "lib" / "modules").rglob("*.ko")}
    order = module_order(MODULES, modules)
    for name in order:
        shutil.copy2(modules[name], root / "lib" / "modules" / "aib" / f"{name}.ko")
    (root / "lib" / "modules" / "aib" / "order").write_text("\n".join(order) + "\n")
    early = module_order(INITRAMFS_MODULES, modules)
    initramfs.write_initramfs(out / "initrd.cpio", busybox, [(name, modules[name]) for name in early])
    vmlinuz = next((kernel_tree / "boot").glob("vmlinuz-*"), None)
    if vmlinuz is None:
        raise SourceError("tiny guest: the kernel package holds no /boot/vmlinuz-*")
    shutil.copy2(vmlinuz, out / "vmlinuz")
    return out / "vmlinuz"


def _module_depends(path: Path) -> list[str]:
    match = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", path.read_bytes())
    return [d for d in match.group(1).decode().split(",") if d] if match else []


def module_order(wanted: Iterable[str], available: dict[str, Path]) -> list[str]:
    """``wanted`` modules present in ``available`` (others are built in) after their dependencies."""
    order: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in order or name in trail or name not in available:
            return
        for dep in _module_depends(available[name]):
            visit(dep.replace("-", "_") if dep.replace("-", "_") in available else dep, (*trail, name))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def _link_applets(root: Path, applets: str) -> None:
    for entry in applets.split():
        rel = entry.lstrip("/")
        for link in {root / rel, root / "bin" / Path(rel).name}:
            if not link.exists() and not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to("/bin/busybox")


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


async def build_tiny_guest(cache_dir: Path) -> TinyGuest:
    """Build (or find in the cache) the tiny guest for the packages apt currently resolves."""
    kernel, packages = await resolve_packages(cache_dir)
    key = cache_key(kernel, packages)
    base = cache_dir / "tiny-guest"
    final = base / key
    versions = {p.name: p.version for p in [kernel, *packages]}
    guest = TinyGuest(final / "disk.raw", final / "vmlinuz", KERNEL_ARGS, key, versions, initrd=final / "initrd.cpio")
    if (final / "guest.json").is_file():
        return guest
    await anyio.Path(base).mkdir(parents=True, exist_ok=True)
    tmp = Path(await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix=f".{key}-", dir=base)))
    try:
        await _download([kernel, *packages], base / "debs", tmp / "download")
        root, ktree = tmp / "root", tmp / "kernel"
        for p in packages:
            await _run(["dpkg-deb", "-x", str(base / "debs" / p.deb_name), str(root)])
        await _run(["dpkg-deb", "-x", str(base / "debs" / kernel.deb_name), str(ktree)])
        applets = await _run([str(root / "bin" / "busybox"), "--list-full"])
        await anyio.to_thread.run_sync(_link_applets, root, applets)
        await anyio.to_thread.run_sync(_assemble, root, ktree, tmp)
        size = await anyio.to_thread.run_sync(_tree_size, root)
        size_mib = (size + DISK_HEADROOM) // (1024 * 1024) + 1
        await _run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                initramfs.ROOT_LABEL,
                "-E",
                "root_owner=0:0",
                "-d",
                str(root),
                str(tmp / "disk.raw"),
                f"{size_mib}M",
            ]
        )
        await anyio.to_thread.run_sync(shutil.rmtree, root)
        await anyio.to_thread.run_sync(shutil.rmtree, ktree)
        meta = {"key": key, "builder": BUILDER_VERSION, "packages": versions, "kernelArgs": KERNEL_ARGS}
        await anyio.Path(tmp / "guest.json").write_text(json.dumps(meta, indent=2))
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(tmp / "download", ignore_errors=True))
        await anyio.Path(tmp).chmod(0o755)
        try:
            await anyio.Path(tmp).rename(final)
        except OSError:
            if not (final / "guest.json").is_file():
                raise
    finally:
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(tmp, ignore_errors=True))
    return guest


async def ensure_tiny_guest(cache_dir: Path) -> TinyGuest:
    """The tiny guest, built on first use and cached under ``cache_dir/tiny-guest/<key>``."""
    return await build_tiny_guest(cache_dir)
