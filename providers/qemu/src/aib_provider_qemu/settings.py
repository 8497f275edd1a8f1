"""The ``[qemu]`` provider settings (also ``AIB_QEMU_<KEY>`` environment variables)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aib_provider_qemu.network import Network, parse_network, parse_networks
from aib_sdk.config import Config
from aib_sdk.errors import UsageError

PROVIDER = "qemu"


def _int(section: dict[str, Any], key: str) -> int | None:
    value = section.get(key)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"[qemu] {key} must be an integer, not {value!r}") from exc


def _float(section: dict[str, Any], key: str, default: float) -> float:
    value = section.get(key)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"[qemu] {key} must be a number of seconds, not {value!r}") from exc


def _bool(section: dict[str, Any], key: str) -> bool:
    value = section.get(key)
    if isinstance(value, bool):
        return value
    text = str(value or "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise UsageError(f"[qemu] {key} must be true or false, not {value!r}")


def _path(section: dict[str, Any], key: str) -> Path | None:
    value = section.get(key)
    return Path(str(value)).expanduser() if value else None


@dataclass(frozen=True)
class QemuSettings:
    """Settings of the QEMU build host.

    - ``binary``: the emulator (default ``qemu-system-x86_64`` on PATH).
    - ``accel``: ``auto`` (probe), ``kvm`` or ``tcg``.
    - ``cpus``/``memory_mib``: override what ``vmSize`` maps to.
    - ``build_user``: the user the NoCloud seed creates (default ``packer``, as AIB's build VMs).
    - ``ssh_user``/``ssh_private_key``/``ssh_host_key``: access to ``static`` images (no seed read).
    - ``trust_on_first_use``: without a pinned ``ssh_host_key``, accept the key the guest presents (off by default;
      ``BuildOptions(trust_on_first_use=True)`` sets it for every provider).
    - ``boot_timeout``/``shutdown_timeout``: seconds.
    - ``tcg_memory_cap_mib``: without KVM, memory above this (default 2048 MiB) only slows the boot, so
      ``vmSize`` memory is capped to it (``memory_mib`` still sets any size; 0 turns the cap off).
    - Windows guests: ``windows_build_user`` (default ``aib``) is the administrator the cloudbase-init seed creates
      with a fresh password per build; ``static`` Windows images use ``winrm_user`` with ``winrm_password`` or
      ``winrm_password_file``, ``winrm_transport`` (``ntlm``: NTLM-sealed HTTP on 5985; ``basic-https``: Basic over
      HTTPS on 5986) and ``winrm_cert_thumbprint``/``winrm_ca_bundle`` to verify the guest's certificate.
      ``windows_nic_model`` (default ``e1000``, which Windows drives without extra drivers);
      ``windows_boot_timeout`` (default 1800 s: a first boot of Windows under TCG runs OOBE and cloudbase-init).
    - ``network``: ``nat`` (default: outbound NAT, only the SSH/WinRM forward inward on 127.0.0.1), ``restrict`` or
      ``none`` (offline), ``bridge:<name>``, ``tap:<name>``, ``socket:<options>``, ``netdev:<raw>``
      (:mod:`aib_provider_qemu.network`); ``networks``: ``[qemu.networks."<subnetId or glob>"] network = …`` for
      ``vmProfile.vnetConfig.subnetId``.
    - ``offer_proxy``: export the host's ``http_proxy``/``https_proxy``/``no_proxy`` (either case) in every step's
      session (off by default; nothing is written into the image).
    """

    binary: str = "qemu-system-x86_64"
    accel: str = "auto"
    cpus: int | None = None
    memory_mib: int | None = None
    build_user: str = "packer"
    ssh_user: str | None = None
    ssh_private_key: Path | None = None
    ssh_host_key: str | None = None
    trust_on_first_use: bool = False
    boot_timeout: float = 300.0
    shutdown_timeout: float = 120.0
    tcg_memory_cap_mib: int = 2048
    windows_build_user: str = "aib"
    winrm_user: str | None = None
    winrm_password: str | None = field(default=None, repr=False)
    winrm_password_file: Path | None = None
    winrm_transport: str = "ntlm"
    winrm_cert_thumbprint: str | None = None
    winrm_ca_bundle: Path | None = None
    windows_nic_model: str = "e1000"
    windows_boot_timeout: float = 1800.0
    network: Network = field(default_factory=Network)
    networks: tuple[tuple[str, Network], ...] = ()
    offer_proxy: bool = False

    @classmethod
    def from_config(cls, config: Config) -> QemuSettings:
        s = config.section(PROVIDER)
        accel = str(s.get("accel", "auto")).lower()
        if accel not in ("auto", "kvm", "tcg"):
            raise UsageError(f"[qemu] accel must be auto, kvm or tcg, not {accel!r}")
        key = s.get("ssh_private_key")
        transport = str(s.get("winrm_transport") or "ntlm").lower()
        if transport not in ("ntlm", "basic-https"):
            raise UsageError(f"[qemu] winrm_transport must be ntlm or basic-https, not {transport!r}")
        nic = str(s.get("windows_nic_model") or "e1000")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", nic):
            raise UsageError(f"[qemu] windows_nic_model must be a QEMU NIC model name, not {nic!r}")
        return cls(
            binary=str(s.get("binary") or "qemu-system-x86_64"),
            accel=accel,
            cpus=_int(s, "cpus"),
            memory_mib=_int(s, "memory_mib"),
            build_user=str(s.get("build_user") or "packer"),
            ssh_user=s.get("ssh_user") or None,
            ssh_private_key=Path(str(key)).expanduser() if key else None,
            ssh_host_key=s.get("ssh_host_key") or None,
            trust_on_first_use=_bool(s, "trust_on_first_use"),
            boot_timeout=_float(s, "boot_timeout", 300.0),
            shutdown_timeout=_float(s, "shutdown_timeout", 120.0),
            tcg_memory_cap_mib=2048 if _int(s, "tcg_memory_cap_mib") is None else int(s["tcg_memory_cap_mib"]),
            windows_build_user=str(s.get("windows_build_user") or "aib"),
            winrm_user=s.get("winrm_user") or None,
            winrm_password=s.get("winrm_password") or None,
            winrm_password_file=_path(s, "winrm_password_file"),
            winrm_transport=transport,
            winrm_cert_thumbprint=s.get("winrm_cert_thumbprint") or None,
            winrm_ca_bundle=_path(s, "winrm_ca_bundle"),
            windows_nic_model=nic,
            windows_boot_timeout=_float(s, "windows_boot_timeout", 1800.0),
            network=parse_network(s.get("network")),
            networks=parse_networks(s.get("networks")),
            offer_proxy=_bool(s, "offer_proxy"),
        )
