"""What a worker can build and what a build needs, as Temporal task queue names.

A build needs the set of providers (plugins other than the core) that own its source, build host, steps and
targets, decided by the submitter's plan. Its activity goes to ``<queue>@<p1>+<p2>…`` (sorted). A worker polls
the queue of every subset of its providers that holds one of its *available* build hosts, so a build only ever
reaches a worker that has every provider it needs.
"""

from __future__ import annotations

import itertools
import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aib_sdk.errors import UsageError
from aib_sdk.plugins.manager import BUILTIN_PLUGIN

if TYPE_CHECKING:
    from aib_sdk.builder.plan import Plan
    from aib_sdk.config import Config
    from aib_sdk.plugins.manager import PluginManager

_GUEST_OS = {"ssh": "Linux", "winrm": "Windows"}
"""The guest OS a communicator reaches (a worker without WinRM cannot customize Windows)."""

MAX_PROVIDERS = 8
"""A worker advertises at most 2**(this-1) queues; more providers than this is refused (name them with
``AIB_DISABLE_PLUGINS``)."""


def activity_queue(base: str, providers: set[str] | frozenset[str]) -> str:
    """The task queue of builds needing exactly ``providers``."""
    return f"{base}@{'+'.join(sorted(providers))}" if providers else base


def build_needs(plan: Plan) -> frozenset[str]:
    """The providers a planned build needs (the core's built-ins are everywhere)."""
    owner = plan.plugins.registry.owner
    classes: list[Any] = [plan.source, plan.host]
    classes += [step.runner for step in [*plan.steps, *plan.validations]]
    classes += [target.distributor for target in plan.targets]
    return frozenset(name for cls in classes if (name := owner.get(cls)) and name != BUILTIN_PLUGIN)


@dataclass(frozen=True)
class Capabilities:
    """What this worker advertises: providers, usable build hosts, OS types and the accelerator."""

    providers: frozenset[str]
    host_providers: frozenset[str]
    build_hosts: tuple[str, ...]
    os_types: tuple[str, ...] = ("Linux", "Windows")
    accelerator: str = "tcg"
    machine: str = field(default_factory=platform.machine)

    def queues(self, base: str) -> list[str]:
        """Every task queue this worker serves (one per provider subset that holds a usable build host)."""
        others = sorted(self.providers - self.host_providers)
        queues: list[str] = []
        for host in sorted(self.host_providers):
            for n in range(len(others) + 1):
                for combo in itertools.combinations(others, n):
                    queues.append(activity_queue(base, {host, *combo}))
        return sorted(set(queues))

    def describe(self) -> str:
        return (
            f"build hosts {', '.join(self.build_hosts) or 'none'}; providers {', '.join(sorted(self.providers))}; "
            f"guests {', '.join(self.os_types) or 'none'}; {self.machine} with {self.accelerator}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "providers": sorted(self.providers),
            "buildHosts": list(self.build_hosts),
            "osTypes": list(self.os_types),
            "accelerator": self.accelerator,
            "machine": self.machine,
        }


def worker_capabilities(plugins: PluginManager, config: Config) -> Capabilities:
    """This machine's capabilities (entry points loaded; call it off the event loop)."""
    registry = plugins.registry
    owner = registry.owner
    providers: set[str] = set()
    for cls in [*registry.sources, *registry.distributors, *registry.customizers.values()]:
        name = owner.get(cls)
        if name and name != BUILTIN_PLUGIN:
            providers.add(name)
    hosts = {name: cls for name, cls in registry.build_hosts.items() if cls.available(config)}
    host_providers = {owner[cls] for cls in hosts.values() if owner.get(cls) and owner[cls] != BUILTIN_PLUGIN}
    providers |= host_providers
    if len(providers) > MAX_PROVIDERS:
        raise UsageError(
            f"this worker has {len(providers)} providers; at most {MAX_PROVIDERS} can be advertised "
            "(block some with AIB_DISABLE_PLUGINS)"
        )
    os_types = tuple(sorted({_GUEST_OS[name] for name in registry.communicators if name in _GUEST_OS}))
    return Capabilities(frozenset(providers), frozenset(host_providers), tuple(sorted(hosts)), os_types, "none")


async def probe_accelerator(plugins: PluginManager, config: Config, build_hosts: tuple[str, ...]) -> str:
    """The best accelerator of this machine's usable build hosts, as each host probes it (optional build host
    member ``async accelerator(config) -> str``, e.g. QEMU's KVM test boot); ``none`` when no host says."""
    found: set[str] = set()
    for name in build_hosts:
        probe = getattr(plugins.registry.build_hosts[name], "accelerator", None)
        if probe is not None:
            found.add(str(await probe(config)))
    return next((a for a in ("kvm", "tcg") if a in found), sorted(found)[0] if found else "none")
