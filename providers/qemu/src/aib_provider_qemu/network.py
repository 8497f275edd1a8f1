"""Build-VM networking: the ``[qemu] network`` setting, ``vnetConfig.subnetId`` mapping, and QEMU's NIC arguments.

Every build VM keeps one user-mode NIC (the first, ``eth0``) that carries the forward of the SSH/WinRM port to
127.0.0.1 on the host — the only way in. What else the guest reaches depends on the network:

- ``nat`` (default): that NIC also NATs outbound traffic, like AIB's build VM: DHCP and DNS from QEMU, and the guest
  reaches whatever the host reaches (the apt mirror, a proxy, config servers, the host's own 127.0.0.1 at 10.0.2.2);
- ``restrict`` / ``none``: the NIC is isolated (``restrict=on``): nothing but the forward, for offline builds;
- ``bridge:<name>``, ``tap:<name>``, ``socket:<options>`` (e.g. ``socket:mcast=230.0.0.1:1234``) and, for experts,
  ``netdev:<raw -netdev value without id>`` (e.g. ``netdev:user,net=10.77.0.0/24``): an isolated forward NIC plus a
  second NIC (``eth1``) on that network, which then carries the guest's own traffic.

``vmProfile.vnetConfig.subnetId`` selects a network through ``[qemu.networks."<subnetId or glob>"] network = …``; a
subnet no table matches is an error before any VM boots.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from aib_sdk.errors import UsageError

MODES = ("nat", "restrict", "none", "bridge", "tap", "socket", "netdev")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_OPTIONS = re.compile(r"^[A-Za-z0-9_.,:=/@+-]+$")
EXTRA_NETDEV_ID = "aibnet1"


@dataclass(frozen=True)
class Network:
    """One parsed network setting."""

    mode: str = "nat"
    value: str = ""

    @property
    def text(self) -> str:
        return f"{self.mode}:{self.value}" if self.value else self.mode

    @property
    def outbound_on_forward_nic(self) -> bool:
        """Whether the forward NIC itself NATs the guest's outbound traffic (only ``nat``)."""
        return self.mode == "nat"


def parse_network(text: Any, where: str = "[qemu] network") -> Network:
    """``nat`` | ``restrict`` | ``none`` | ``bridge:NAME`` | ``tap:NAME`` | ``socket:OPTS`` | ``netdev:RAW``."""
    raw = str(text or "nat").strip()
    mode, _, value = raw.partition(":")
    mode = mode.lower()
    if mode not in MODES:
        raise UsageError(
            f"{where} must be nat, restrict, none, bridge:<name>, tap:<name>, socket:<options> or "
            f"netdev:<raw netdev>, not {raw!r}"
        )
    if mode in ("nat", "restrict", "none"):
        if value:
            raise UsageError(f"{where}: {mode} takes no value (got {raw!r})")
        return Network(mode)
    if mode in ("bridge", "tap") and not _IFNAME.match(value):
        raise UsageError(f"{where}: {mode}:<name> needs an interface name (letters, digits, _.-; at most 15)")
    if mode in ("socket", "netdev") and not (value and _OPTIONS.match(value)):
        raise UsageError(f"{where}: {mode}:<options> needs QEMU options such as mcast=230.0.0.1:1234")
    if mode == "netdev" and ("id=" in value or value.split(",")[0] == ""):
        raise UsageError(f"{where}: netdev:<raw> starts with the backend (user, tap, socket …) and sets no id=")
    return Network(mode, value)


def parse_networks(table: Any) -> tuple[tuple[str, Network], ...]:
    """``[qemu.networks."<subnetId or glob>"] network = …`` → (pattern, network) pairs, in file order."""
    if table in (None, ""):
        return ()
    if not isinstance(table, dict):
        raise UsageError('[qemu.networks] must hold tables: [qemu.networks."<subnetId or glob>"] network = "…"')
    out: list[tuple[str, Network]] = []
    for pattern, entry in table.items():
        where = f'[qemu.networks."{pattern}"]'
        if not isinstance(entry, dict) or "network" not in entry:
            raise UsageError(f'{where} needs network = "nat|restrict|bridge:<name>|tap:<name>|socket:…|netdev:…"')
        out.append((str(pattern), parse_network(entry["network"], f"{where} network")))
    return tuple(out)


def network_for(default: Network, networks: tuple[tuple[str, Network], ...], subnet_id: str | None) -> Network:
    """The network of a build: the subnet's mapping (exact match first, then the first matching glob), else
    ``default``. An unmapped subnet raises :class:`UsageError`, naming the table to add."""
    if not subnet_id:
        return default
    for pattern, network in networks:
        if pattern.lower() == subnet_id.lower():
            return network
    for pattern, network in networks:
        if fnmatch.fnmatchcase(subnet_id.lower(), pattern.lower()):
            return network
    raise UsageError(
        f"vmProfile.vnetConfig.subnetId {subnet_id!r} is not mapped to a local network: add "
        f'[qemu.networks."{subnet_id}"] network = "bridge:<name>" (or a glob such as "*/subnets/build") to aib.toml'
    )


def nic_args(network: Network, *, model: str, port: int, guest_port: int) -> list[str]:
    """The ``-nic``/``-netdev``/``-device`` arguments: the forward NIC first (``eth0``), then the extra network."""
    forward = f"hostfwd=tcp:127.0.0.1:{port}-:{guest_port}"
    if network.outbound_on_forward_nic:
        return ["-nic", f"user,model={model},{forward}"]
    args = ["-nic", f"user,restrict=on,model={model},{forward}"]
    if network.mode == "bridge":
        netdev = f"bridge,id={EXTRA_NETDEV_ID},br={network.value}"
    elif network.mode == "tap":
        netdev = f"tap,id={EXTRA_NETDEV_ID},ifname={network.value},script=no,downscript=no"
    elif network.mode == "socket":
        netdev = f"socket,id={EXTRA_NETDEV_ID},{network.value}"
    elif network.mode == "netdev":
        backend, _, rest = network.value.partition(",")
        netdev = f"{backend},id={EXTRA_NETDEV_ID}" + (f",{rest}" if rest else "")
    else:  # restrict / none
        return args
    return [*args, "-netdev", netdev, "-device", f"{model},netdev={EXTRA_NETDEV_ID}"]
