"""The build VM's network: the ``[qemu] network`` setting, ``vnetConfig.subnetId`` mapping and the NIC arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from aib_provider_qemu import hooks as qemu_hooks
from aib_provider_qemu.host import proxy_environment, qemu_command
from aib_provider_qemu.network import Network, network_for, nic_args, parse_network, parse_networks
from aib_provider_qemu.settings import QemuSettings
from aib_sdk.artifacts import DiskImage
from aib_sdk.config import Config
from aib_sdk.errors import UsageError
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fakes import fake_plugin

FWD = "hostfwd=tcp:127.0.0.1:2222-:22"


def args_for(text: str, model: str = "virtio-net-pci") -> list[str]:
    return nic_args(parse_network(text), model=model, port=2222, guest_port=22)


def test_nat_is_the_default_and_only_the_forward_comes_in() -> None:
    assert QemuSettings.from_config(Config({}, {})).network == Network("nat")
    assert args_for("nat") == ["-nic", f"user,model=virtio-net-pci,{FWD}"]


@pytest.mark.parametrize("mode", ["restrict", "none"])
def test_restrict_and_none_isolate_the_guest(mode: str) -> None:
    assert args_for(mode) == ["-nic", f"user,restrict=on,model=virtio-net-pci,{FWD}"]


@pytest.mark.parametrize(
    ("text", "netdev"),
    [
        ("bridge:br0", "bridge,id=aibnet1,br=br0"),
        ("tap:tap-aib", "tap,id=aibnet1,ifname=tap-aib,script=no,downscript=no"),
        ("socket:mcast=230.0.0.1:1234", "socket,id=aibnet1,mcast=230.0.0.1:1234"),
        ("netdev:user,net=10.77.0.0/24", "user,id=aibnet1,net=10.77.0.0/24"),
    ],
)
def test_extra_networks_keep_an_isolated_forward_nic_first(text: str, netdev: str) -> None:
    """The SSH/WinRM forward must work whatever the network: eth0 is an isolated user-mode NIC carrying only the
    forward, and the named network is a second NIC (eth1) that carries the guest's own traffic."""
    assert args_for(text, "e1000") == [
        "-nic",
        f"user,restrict=on,model=e1000,{FWD}",
        "-netdev",
        netdev,
        "-device",
        "e1000,netdev=aibnet1",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wifi", "must be nat, restrict, none"),
        ("nat:x", "nat takes no value"),
        ("bridge:", "needs an interface name"),
        ("bridge:br0,script=/tmp/x", "needs an interface name"),
        ("tap:" + "x" * 16, "needs an interface name"),
        ("socket:", "needs QEMU options"),
        ("socket:connect=1.2.3.4:5 ; rm", "needs QEMU options"),
        ("netdev:user,id=x", "sets no id="),
    ],
)
def test_bad_network_settings_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        QemuSettings.from_config(Config({}, {"AIB_QEMU_NETWORK": text}))


def test_environment_and_file_select_the_network() -> None:
    config = Config({"qemu": {"network": "restrict"}}, {})
    assert QemuSettings.from_config(config).network == Network("restrict")
    both = Config({"qemu": {"network": "restrict"}}, {"AIB_QEMU_NETWORK": "bridge:br0"})
    assert QemuSettings.from_config(both).network == Network("bridge", "br0")  # the environment wins


def test_subnets_map_to_named_networks_exact_first_then_globs() -> None:
    subnet = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/build"
    table = {
        "*/subnets/build": {"network": "bridge:br-build"},
        subnet.upper(): {"network": "tap:tap0"},  # subnet ids compare case-insensitively, as ARM ids do
        "*/subnets/other": {"network": "restrict"},
    }
    settings = QemuSettings.from_config(Config({"qemu": {"network": "nat", "networks": table}}, {}))
    assert network_for(settings.network, settings.networks, subnet) == Network("tap", "tap0")
    assert network_for(settings.network, settings.networks, subnet.replace("/v/", "/w/")) == Network(
        "bridge", "br-build"
    )
    assert network_for(settings.network, settings.networks, None) == Network("nat")
    with pytest.raises(UsageError) as unmapped:
        network_for(settings.network, settings.networks, subnet.replace("build", "web"))
    assert "is not mapped to a local network" in str(unmapped.value)
    assert '[qemu.networks."' in str(unmapped.value) and "subnets/web" in str(unmapped.value)


def test_malformed_network_tables_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="needs network ="):
        parse_networks({"*/subnets/a": {"bridge": "br0"}})
    with pytest.raises(UsageError, match="must hold tables"):
        parse_networks("bridge:br0")
    with pytest.raises(UsageError, match=r'\[qemu.networks."x"\] network'):
        parse_networks({"x": {"network": "wifi"}})


def test_proxy_is_offered_only_when_asked() -> None:
    assert QemuSettings.from_config(Config({}, {})).offer_proxy is False
    assert QemuSettings.from_config(Config({}, {"AIB_QEMU_OFFER_PROXY": "true"})).offer_proxy is True
    with pytest.raises(UsageError, match="true or false"):
        QemuSettings.from_config(Config({"qemu": {"offer_proxy": "maybe"}}, {}))
    env = {"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "localhost", "PATH": "/bin"}
    assert proxy_environment(env) == {
        "https_proxy": "http://proxy:3128",
        "HTTPS_PROXY": "http://proxy:3128",
        "no_proxy": "localhost",
        "NO_PROXY": "localhost",
    }


def test_qemu_command_carries_the_network(tmp_path: Path) -> None:
    image = DiskImage(path=tmp_path / "d.raw", format="raw", kernel=tmp_path / "vmlinuz", disk_interface="nvme")
    common = {
        "binary": "qemu-system-x86_64",
        "accel": "tcg",
        "cpus": 1,
        "memory_mib": 256,
        "image": image,
        "overlay": tmp_path / "o.qcow2",
        "data_disks": [],
        "seed_iso": None,
        "serial_log": tmp_path / "s.log",
        "qmp_socket": tmp_path / "q.sock",
        "pidfile": tmp_path / "pid",
        "port": 2222,
        "name": "t",
    }
    args = qemu_command(**common, network=Network("netdev", "user,net=10.77.0.0/24"))  # type: ignore[arg-type]
    assert args[args.index("-netdev") + 1] == "user,id=aibnet1,net=10.77.0.0/24"
    assert args.index("-nic") < args.index("-netdev")  # the forward NIC is eth0


@pytest.mark.anyio
async def test_unmapped_subnet_fails_the_build_before_the_source_is_resolved(tmp_path: Path) -> None:
    """The qemu host's preflight refuses an unmapped ``vnetConfig.subnetId`` first thing: no source, no VM."""
    from aib_sdk.builder import Builder

    fakes = fake_plugin()
    qemu = {"networks": {"*/subnets/build": {"network": "restrict"}}}
    options = BuildOptions(
        config=Config({"qemu": qemu}, {"AIB_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}),
        plugins=PluginManager(entry_points=False, plugins=[qemu_hooks, fakes]),
        build_host="qemu",
    )
    template = {
        "source": {"type": "FakeImage"},
        "vmProfile": {"vnetConfig": {"subnetId": "/subscriptions/s/x/virtualNetworks/v/subnets/web"}},
        "distribute": [{"type": "FakeTarget", "runOutputName": "out"}],
    }
    result = await Builder(template, options=options).run()
    assert result.run_state == "Failed"
    message = result.last_run_status.message
    assert message.startswith("Building failed (checking the build host qemu): vmProfile.vnetConfig.subnetId")
    assert "subnets/web' is not mapped to a local network" in message and '[qemu.networks."' in message
    assert fakes.world.resolved == [] and fakes.world.machines == []
