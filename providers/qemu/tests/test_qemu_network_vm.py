"""The build VM's network on the tiny guest: ``nat`` reaches the host, ``restrict`` stays offline, and a
``vnetConfig.subnetId`` mapped by name gets its own (second, user-mode) network."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from aib_provider_qemu import hooks as qemu_hooks
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.events import LogLine
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.result import BuildResult
from aib_sdk.testing.recorder import EventRecorder

pytestmark = [pytest.mark.anyio, pytest.mark.vm, pytest.mark.timeout(900)]

SUBNET = "/subscriptions/s/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet/subnets/build"


class HostServer:
    """An HTTP server on the host's 127.0.0.1 (QEMU's user-mode gateway forwards the guest's 10.0.2.2 to it)."""

    def __init__(self) -> None:
        self.port = 0
        self.hits = 0

    async def serve(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(10):
                await stream.receive(4096)
                self.hits += 1
                await stream.send(b"HTTP/1.0 200 OK\r\nContent-Length: 16\r\n\r\nhello-from-host\n")


@pytest.fixture
async def host_server() -> AsyncIterator[HostServer]:
    server = HostServer()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.serve)
        yield server
        tg.cancel_scope.cancel()


PROXY_NAMES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "AIB_QEMU_NETWORK")


async def build(
    tmp_path: Path,
    cache: Path,
    qemu: dict[str, Any],
    lines: list[str],
    env_extra: dict[str, str] | None = None,
    **props: Any,
) -> BuildResult:
    recorder = EventRecorder()
    env = {k: v for k, v in os.environ.items() if k not in PROXY_NAMES}
    env.update(AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(cache), **(env_extra or {}))
    plugins = PluginManager(entry_points=False, plugins=[qemu_hooks])
    options = BuildOptions(
        config=Config({"qemu": qemu}, env), plugins=plugins, build_host="qemu", on_event=recorder, timeout=600
    )
    out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}.qcow2"
    template = {
        **props,
        "customize": [{"type": "Shell", "name": "probe", "inline": lines}],
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": out.as_uri()}],
    }
    result = await Builder(template, options=options).run()
    result.log = [e.line for e in recorder.of_kind(LogLine) if e.source == "probe"]  # type: ignore[attr-defined]
    return result


def probe(url: str) -> list[str]:
    """An HTTP GET with busybox ``nc`` (its static ``wget`` crashes in glibc's resolver); REACHED or OFFLINE."""
    host, _, rest = url.removeprefix("http://").partition(":")
    port, _, path = rest.partition("/")
    get = f"printf 'GET /{path} HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port} > /tmp/probe 2>/dev/null || true"
    return [
        f"{get}; if grep -q hello-from-host /tmp/probe; then tail -n 1 /tmp/probe; echo REACHED; else echo OFFLINE; fi"
    ]


async def test_nat_reaches_the_host_and_restrict_keeps_the_build_offline(
    tmp_path: Path, tiny_guest_source: dict[str, str], tiny_guest_cache: Path, host_server: HostServer
) -> None:
    url = f"http://10.0.2.2:{host_server.port}/probe"
    show_proxy = 'echo "proxy=${http_proxy:-none}"'
    nat = await build(tmp_path / "nat", tiny_guest_cache, {}, [show_proxy, *probe(url)], source=tiny_guest_source)
    assert nat.run_state == "Succeeded", nat.last_run_status.message
    assert nat.log == ["proxy=none", "hello-from-host", "REACHED"]  # type: ignore[attr-defined]
    assert host_server.hits == 1

    # restrict keeps the build offline; offer_proxy hands the host's proxy variables to the steps' sessions
    offline = await build(
        tmp_path / "restrict",
        tiny_guest_cache,
        {"network": "restrict", "offer_proxy": True},
        [show_proxy, *probe(url)],
        env_extra={"http_proxy": "http://proxy.invalid:3128"},
        source=tiny_guest_source,
    )
    assert offline.run_state == "Succeeded", offline.last_run_status.message
    assert offline.log == ["proxy=http://proxy.invalid:3128", "OFFLINE"]  # type: ignore[attr-defined]
    assert host_server.hits == 1  # nothing arrived from the restricted guest


async def test_vnet_subnet_maps_to_a_named_second_network(
    tmp_path: Path, tiny_guest_source: dict[str, str], tiny_guest_cache: Path, host_server: HostServer
) -> None:
    """``[qemu.networks."*/subnets/build"] network = "netdev:user,net=10.77.0.0/24"``: the guest gets eth1 on that
    network (a DHCP lease in 10.77.0.0/24) and reaches the host through it, while eth0 carries only the forward."""
    qemu = {"networks": {"*/subnets/build": {"network": "netdev:user,net=10.77.0.0/24"}}}
    lines = [
        "ls /sys/class/net | tr '\\n' ' '; echo",
        "sudo ip link set eth1 up",
        "sudo udhcpc -i eth1 -n -q -s /bin/true 2>&1 | grep -o 'lease of [0-9.]* obtained'",
        "sudo ip addr add 10.77.0.15/24 dev eth1",
        *probe(f"http://10.0.2.2:{host_server.port}/eth0"),  # eth0 is restricted: no way out
        *probe(f"http://10.77.0.2:{host_server.port}/eth1"),  # the mapped network's gateway is the host
    ]
    vnet = {"vmProfile": {"vnetConfig": {"subnetId": SUBNET}}}
    result = await build(tmp_path / "vnet", tiny_guest_cache, qemu, lines, source=tiny_guest_source, **vnet)
    assert result.run_state == "Succeeded", result.last_run_status.message
    log = result.log  # type: ignore[attr-defined]
    assert log[0].split() == ["eth0", "eth1", "lo"]
    assert log[1] == "lease of 10.77.0.15 obtained"
    assert log[2:] == ["OFFLINE", "hello-from-host", "REACHED"]
    assert host_server.hits == 1
