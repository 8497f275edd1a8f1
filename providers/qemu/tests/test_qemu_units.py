"""Unit tests of the QEMU provider's pure parts: accelerator probe, VM sizes, seed contents, command line."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import asyncssh
import pycdlib
import pytest

from aib_provider_qemu import accel, seed, vmsizes
from aib_provider_qemu.accel import TestBoot
from aib_provider_qemu.host import qemu_command
from aib_provider_qemu.settings import QemuSettings
from aib_sdk.artifacts import DiskImage
from aib_sdk.config import Config
from aib_sdk.errors import UsageError
from aib_sdk.testing.tiny_guest import _Package, cache_key, module_order


def fake_sys(tmp_path: Path, *modules: str) -> Path:
    for name in modules:
        (tmp_path / "sys" / "module" / name).mkdir(parents=True)
    (tmp_path / "sys" / "module").mkdir(parents=True, exist_ok=True)
    return tmp_path / "sys"


def fake_dev(tmp_path: Path) -> Path:
    dev = tmp_path / "kvm"
    dev.write_text("")
    return dev


@pytest.mark.anyio
async def test_probe_needs_a_hardware_kvm_module(tmp_path: Path) -> None:
    calls: list[int] = []

    async def boots() -> bool:
        calls.append(1)
        return True

    sys_root = fake_sys(tmp_path, "kvm", "kvm_pvm")  # paravirtual KVM, as on this machine
    assert await accel.probe(sys_root=sys_root, dev_kvm=fake_dev(tmp_path), test_boot=boots) == "tcg"
    assert calls == []  # no test boot without a hardware module


@pytest.mark.anyio
@pytest.mark.parametrize("module", ["kvm_intel", "kvm_amd"])
async def test_probe_uses_kvm_only_when_the_test_boot_succeeds(tmp_path: Path, module: str) -> None:
    sys_root = fake_sys(tmp_path, "kvm", module)
    dev = fake_dev(tmp_path)

    async def boots() -> bool:
        return True

    async def hangs() -> bool:
        return False

    async def breaks() -> bool:
        raise OSError("no such binary")

    assert await accel.probe(sys_root=sys_root, dev_kvm=dev, test_boot=boots) == "kvm"
    assert await accel.probe(sys_root=sys_root, dev_kvm=dev, test_boot=hangs) == "tcg"
    assert await accel.probe(sys_root=sys_root, dev_kvm=dev, test_boot=breaks) == "tcg"
    assert await accel.probe(sys_root=sys_root, dev_kvm=dev, test_boot=None) == "tcg"
    assert await accel.probe(sys_root=sys_root, dev_kvm=tmp_path / "missing", test_boot=boots) == "tcg"


@pytest.mark.anyio
async def test_the_kvm_test_boot_is_remembered_until_host_emulator_or_kernel_change(tmp_path: Path) -> None:
    """The verdict of the (seconds-long) test boot is kept on disk: asked again with the same boot of the host, the
    same emulator binary, kernel and /dev/kvm, no VM boots; any of them changed, it boots again."""
    boots: list[int] = []

    async def test_boot() -> bool:
        boots.append(1)
        return True

    binary, kernel, dev, boot_id = (tmp_path / name for name in ("qemu-system-x86_64", "vmlinuz", "kvm", "boot_id"))
    for file, text in ((binary, "elf"), (kernel, "kernel"), (dev, ""), (boot_id, "boot-1\n")):
        file.write_text(text)
    binary.chmod(0o755)
    records = tmp_path / "records"

    def ask() -> TestBoot:  # as a new aib process would: nothing in memory
        facts = functools.partial(accel.test_boot_facts, str(binary), kernel, dev_kvm=dev, boot_id=boot_id)
        return accel.remembered(test_boot, records, facts)

    assert await ask()() and await ask()() and len(boots) == 1
    kernel.write_text("another kernel")
    assert await ask()() and len(boots) == 2
    binary.write_text("an upgraded emulator")
    assert await ask()() and len(boots) == 3
    boot_id.write_text("boot-2\n")  # the host rebooted (a KVM module may have come or gone)
    assert await ask()() and len(boots) == 4
    assert await ask()() and len(boots) == 4
    boot_id.unlink()  # nothing to key on: the test boot runs every time
    assert await ask()() and await ask()() and len(boots) == 6


def test_accel_arguments() -> None:
    assert accel.accel_args("tcg") == ["-accel", "tcg,thread=multi", "-cpu", "max"]
    assert accel.accel_args("kvm") == ["-accel", "kvm", "-cpu", "host"]


def test_vm_sizes_table_generic_default_and_caps() -> None:
    assert vmsizes.lookup("Standard_D2s_v3") == (2, 8)
    assert vmsizes.lookup("standard_b1s") == (1, 1)
    assert vmsizes.lookup("Standard_D16ds_v5") == (16, 64.0)  # not in the table: N vCPUs, 4 GiB each
    assert vmsizes.lookup("") == (1, 3.5)  # AIB's default Standard_D1_v2
    assert vmsizes.lookup("", generation="V2") == (2, 8)  # AIB's Gen2 default Standard_D2ds_v4
    assert vmsizes.lookup("weird") == (1, 3.5)
    shape = vmsizes.shape("Standard_D8s_v3", host_cpus=2, host_mib=8192)
    assert shape == vmsizes.VmShape(cpus=2, memory_mib=4096)
    assert vmsizes.shape("Standard_B2s", host_cpus=8, host_mib=65536) == vmsizes.VmShape(2, 4096)
    assert vmsizes.shape("Standard_D8s_v3", cpus=3, memory_mib=700, host_cpus=2) == vmsizes.VmShape(3, 700)


def test_settings_from_config_and_environment() -> None:
    config = Config({"qemu": {"cpus": 2, "accel": "tcg"}}, {"AIB_QEMU_MEMORY_MIB": "512", "AIB_QEMU_SSH_USER": "me"})
    settings = QemuSettings.from_config(config)
    assert (settings.cpus, settings.memory_mib, settings.accel, settings.ssh_user) == (2, 512, "tcg", "me")
    assert settings.build_user == "packer"
    with pytest.raises(UsageError):
        QemuSettings.from_config(Config({"qemu": {"accel": "hvf"}}, {}))


@pytest.mark.anyio
async def test_seed_holds_user_client_key_and_host_keys(tmp_path: Path) -> None:
    keys = await seed.generate_keys()
    path = tmp_path / "seed.iso"
    await seed.write_seed(path, user="packer", keys=keys, instance_id="aib-123")
    assert path.stat().st_mode & 0o777 == 0o600
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        files = {}
        for name in ("user-data", "meta-data"):
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            files[name] = buf.getvalue().decode()
    finally:
        iso.close()
    user_data = files["user-data"]
    assert user_data.startswith("#cloud-config\n")
    assert "  - name: packer\n" in user_data
    assert f"      - {keys.client_public}\n" in user_data
    assert "instance-id: aib-123" in files["meta-data"]
    for name, key in keys.host.items():
        lines = user_data.splitlines()
        start = lines.index(f"  {name}_private: |") + 1
        block = []
        for line in lines[start:]:
            if not line.startswith("    "):
                break
            block.append(line[4:])
        # The private key block read back the way the tiny guest's awk reads it is the real key.
        restored = asyncssh.import_private_key("\n".join(block) + "\n")
        assert restored.export_public_key() == key.export_public_key()
    assert {k.split()[0] for k in keys.host_public} == {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"}


def test_qemu_command_forwards_ssh_on_loopback_only(tmp_path: Path) -> None:
    image = DiskImage(
        path=tmp_path / "d.raw", format="raw", kernel=tmp_path / "vmlinuz", kernel_args="root=x", disk_interface="nvme"
    )
    args = qemu_command(
        binary="qemu-system-x86_64",
        accel="tcg",
        cpus=2,
        memory_mib=1024,
        image=image,
        overlay=tmp_path / "o.qcow2",
        data_disks=[tmp_path / "d0.qcow2"],
        seed_iso=tmp_path / "s.iso",
        serial_log=tmp_path / "serial.log",
        qmp_socket=tmp_path / "q.sock",
        pidfile=tmp_path / "pid",
        port=2222,
        name="t",
    )
    joined = " ".join(args)
    assert "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22" in joined  # nat: outbound by default
    assert "nvme,drive=os,serial=aib-os" in joined and f"file={tmp_path / 'o.qcow2'},format=qcow2" in joined
    assert f"file={tmp_path / 's.iso'},format=raw,readonly=on" in joined
    assert "-daemonize" not in args and args[args.index("-append") + 1] == "root=x"
    assert "d.raw" not in joined  # the base disk is never opened directly


def test_module_order_puts_dependencies_first(tmp_path: Path) -> None:
    def ko(name: str, depends: str) -> Path:
        path = tmp_path / f"{name}.ko"
        path.write_bytes(b"\x7fELF junk\x00license=GPL\x00depends=" + depends.encode() + b"\x00name=" + name.encode())
        return path

    mods = {
        "isofs": ko("isofs", "cdrom"),
        "cdrom": ko("cdrom", ""),
        "virtio": ko("virtio", ""),
        "virtio_blk": ko("virtio_blk", "virtio,virtio_ring"),
        "virtio_ring": ko("virtio_ring", "virtio"),
    }
    order = module_order(["virtio_blk", "isofs", "builtin_thing"], mods)
    assert order == ["virtio", "virtio_ring", "virtio_blk", "cdrom", "isofs"]


def test_tiny_guest_cache_key_follows_package_versions() -> None:
    kernel = _Package("linux-image-x", "1", "amd64", ())
    a = cache_key(kernel, [_Package("busybox-static", "1.35", "amd64", ())])
    b = cache_key(kernel, [_Package("busybox-static", "1.36", "amd64", ())])
    assert a != b and a == cache_key(kernel, [_Package("busybox-static", "1.35", "amd64", ())])


@pytest.mark.anyio
async def test_static_images_need_credentials_and_a_pinned_host_key(tmp_path: Path) -> None:
    from aib_provider_qemu.host import QemuBuildHost
    from aib_sdk.errors import BuildHostError
    from aib_sdk.options import BuildOptions
    from aib_sdk.protocols import VmRequest
    from aib_sdk.testing.fakes import make_run_context

    image = DiskImage(path=tmp_path / "disk.qcow2", format="qcow2", access="static")
    key = tmp_path / "id"
    key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    cases = [
        ({}, "ssh_user and ssh_private_key"),
        ({"AIB_QEMU_SSH_USER": "admin", "AIB_QEMU_SSH_PRIVATE_KEY": str(key)}, "no pinned SSH host key"),
    ]
    for env, message in cases:
        config = Config({}, {"AIB_HOME": str(tmp_path / "home"), "AIB_CACHE": str(tmp_path / "c"), **env})
        ctx = make_run_context(tmp_path, config=config, options=BuildOptions(config=config))
        with pytest.raises(BuildHostError, match=message):
            async with QemuBuildHost().start(image, VmRequest(), ctx):
                pytest.fail("must refuse before booting")
        assert list(ctx.staging.work.iterdir()) == []


def test_ssh_pinned_keys_read_public_keys_and_known_hosts_lines() -> None:
    from aib_sdk.communicators.ssh import SshCommunicator
    from aib_sdk.errors import CommunicatorError

    a = asyncssh.generate_private_key("ssh-ed25519")
    b = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    pub_a = a.export_public_key().decode().strip()
    known_b = f"[127.0.0.1]:2222 {b.export_public_key().decode().strip()}"
    comm = SshCommunicator(host_keys=[pub_a, f"# comment\n{known_b}\n"])
    pinned = [k.split()[:2] for k in comm.pinned_host_keys]
    assert pinned == [pub_a.split()[:2], known_b.split()[1:3]]
    with pytest.raises(CommunicatorError, match="cannot read pinned host key"):
        SshCommunicator(host_keys=["ssh-ed25519 not-base64!"])
