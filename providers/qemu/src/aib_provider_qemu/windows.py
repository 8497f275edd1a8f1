"""Windows guests on the QEMU build host: WinRM credentials, the cloudbase-init seed, the communicator, readiness.

A ``cloud-init`` Windows image (one with cloudbase-init, as Windows cloud images have) gets an OpenStack config drive
(ISO9660 labelled ``config-2``, read by cloudbase-init's default ``ConfigDriveService``) whose ``user_data`` is a
``#ps1_sysnative`` script: it creates (or resets) the build user with a password generated for this build, adds it to
Administrators, turns WinRM on over HTTP with ``AllowUnencrypted=false`` (NTLM sealing) and opens the firewall for it.
The password lives only in that seed (mode 0600, deleted once the guest answers) and in memory; it is never put on
QEMU's command line, in an event, a log line or an error message. ``static`` images use the ``winrm_*`` settings.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.to_thread

from aib_provider_qemu import seed
from aib_provider_qemu.settings import QemuSettings
from aib_sdk.communicators.winrm.scripts import quote
from aib_sdk.errors import BuildHostError, CommunicatorError
from aib_sdk.redaction import Secret, register_secret

if TYPE_CHECKING:  # the WinRM stack loads when a Windows guest needs it
    from aib_sdk.communicators.winrm import WinRMCommunicator

WINRM_HTTP_PORT = 5985
WINRM_HTTPS_PORT = 5986
DEFAULT_POWEROFF = "shutdown /s /t 0 /f"
PASSWORD_FILE = "winrm-password"
SEED_LABEL = "config-2"
_SYMBOLS = "-_.,;!@#+=?~*"  # no quotes, "$", "`" or ":" (credential stores split on it)
_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,19}")
Transport = Literal["ntlm", "basic-https"]


@dataclass(frozen=True)
class WinRMAccess:
    """How the build logs in to a Windows guest. ``generated``: the password was made for this build (seeded)."""

    username: str
    password: str = field(repr=False)
    transport: Transport = "ntlm"
    cert_thumbprint: str | None = None
    ca_bundle: Path | None = None
    generated: bool = False

    @property
    def guest_port(self) -> int:
        """The guest's WinRM port: 5985 (HTTP, NTLM-sealed) or 5986 (HTTPS)."""
        return WINRM_HTTPS_PORT if self.transport == "basic-https" else WINRM_HTTP_PORT


def generate_password(length: int = 24) -> str:
    """A random password meeting Windows' complexity rules (upper, lower, digit, symbol; no quote characters)."""
    if length < 12:
        raise ValueError("a build password needs at least 12 characters")
    classes = [string.ascii_uppercase, string.ascii_lowercase, string.digits, _SYMBOLS]
    alphabet = "".join(classes)
    chars = [secrets.choice(c) for c in classes] + [secrets.choice(alphabet) for _ in range(length - len(classes))]
    secrets.SystemRandom().shuffle(chars)
    return Secret("".join(chars)).reveal()  # registered: every sink masks it from now on


def check_username(user: str) -> str:
    """A Windows local account name safe to put in the seed script (letters, digits, ``._-``; at most 20)."""
    if not _USER_RE.fullmatch(user):
        raise BuildHostError(
            f"Windows build user {user!r} is not a valid local account name (letters, digits, '._-', at most 20)"
        )
    return user


def user_data(user: str, password: str) -> str:
    """The cloudbase-init ``#ps1_sysnative`` script giving the build WinRM access as a local administrator."""
    check_username(user)
    lines = [
        "#ps1_sysnative",
        "# aib-sdk build access: written per build, deleted when the build ends.",
        "$ErrorActionPreference = 'Stop'",
        f"$user = {quote(user)}",
        f"$password = ConvertTo-SecureString {quote(password)} -AsPlainText -Force",
        "if (Get-LocalUser -Name $user -ErrorAction SilentlyContinue) {",
        "  Set-LocalUser -Name $user -Password $password -PasswordNeverExpires $true",
        "  Enable-LocalUser -Name $user",
        "} else {",
        "  New-LocalUser -Name $user -Password $password -PasswordNeverExpires -AccountNeverExpires "
        "-Description 'aib-sdk build user' | Out-Null",
        "}",
        "if (-not (Get-LocalGroupMember -SID 'S-1-5-32-544' -Member $user -ErrorAction SilentlyContinue)) {",
        "  Add-LocalGroupMember -SID 'S-1-5-32-544' -Member $user",
        "}",
        "# local administrators keep their full token over the network (UAC remote restrictions off)",
        "New-ItemProperty -Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System' "
        "-Name LocalAccountTokenFilterPolicy -Value 1 -PropertyType DWord -Force | Out-Null",
        "Get-NetConnectionProfile | Where-Object { $_.NetworkCategory -eq 'Public' } | "
        "Set-NetConnectionProfile -NetworkCategory Private",
        "Enable-PSRemoting -SkipNetworkProfileCheck -Force | Out-Null",
        "Set-Service -Name WinRM -StartupType Automatic",
        "Set-Item -Path WSMan:\\localhost\\Service\\AllowUnencrypted -Value $false",
        "Set-Item -Path WSMan:\\localhost\\Service\\Auth\\Basic -Value $false",
        "Set-Item -Path WSMan:\\localhost\\MaxEnvelopeSizekb -Value 500",
        "Remove-NetFirewallRule -Name 'aib-sdk-winrm-http' -ErrorAction SilentlyContinue",
        "New-NetFirewallRule -Name 'aib-sdk-winrm-http' -DisplayName 'aib-sdk WinRM (HTTP)' -Direction Inbound "
        f"-Protocol TCP -LocalPort {WINRM_HTTP_PORT} -Action Allow -Profile Any | Out-Null",
        "Restart-Service -Name WinRM",
    ]
    return "\r\n".join(lines) + "\r\n"


def meta_data(instance_id: str, hostname: str = "aib-build") -> str:
    """OpenStack ``meta_data.json``: cloudbase-init runs its plugins once per ``uuid``."""
    return json.dumps({"uuid": instance_id, "hostname": hostname, "name": hostname, "launch_index": 0}, indent=2)


SEED_FILES = {"meta_data.json": "META.JSON;1", "user_data": "USER.;1"}


def _write_config_drive(path: Path, files: dict[str, str]) -> None:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    try:
        iso.add_directory("/OPENSTAC", rr_name="openstack", joliet_path="/openstack")
        iso.add_directory("/OPENSTAC/LATEST", rr_name="latest", joliet_path="/openstack/latest")
        for name, text in files.items():
            data = text.encode()
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                f"/OPENSTAC/LATEST/{SEED_FILES[name]}",
                rr_name=name,
                joliet_path=f"/openstack/latest/{name}",
            )
        seed.write_private(iso, path)
    finally:
        iso.close()


async def write_seed(path: Path, *, user: str, password: str, instance_id: str) -> None:
    """Write the cloudbase-init config drive to ``path`` (mode 0600: it holds the build password)."""
    files = {"meta_data.json": meta_data(instance_id), "user_data": user_data(user, password)}
    await anyio.to_thread.run_sync(_write_config_drive, path, files)


async def static_access(settings: QemuSettings) -> WinRMAccess:
    """Credentials for a Windows image that reads no seed, from the ``winrm_*`` settings."""
    if not settings.winrm_user or not (settings.winrm_password or settings.winrm_password_file):
        raise BuildHostError(
            "this Windows image reads no cloudbase-init seed: set the qemu provider's winrm_user and winrm_password "
            "or winrm_password_file (AIB_QEMU_WINRM_USER, AIB_QEMU_WINRM_PASSWORD, AIB_QEMU_WINRM_PASSWORD_FILE)"
        )
    password = settings.winrm_password
    if password is None and settings.winrm_password_file is not None:
        try:
            password = (await anyio.Path(settings.winrm_password_file).read_text()).rstrip("\r\n")
        except OSError as exc:
            raise BuildHostError(f"cannot read winrm_password_file {settings.winrm_password_file}: {exc}") from exc
    if not password:
        raise BuildHostError("the qemu provider's WinRM password is empty")
    register_secret(password)
    transport: Transport = "basic-https" if settings.winrm_transport == "basic-https" else "ntlm"
    if transport == "basic-https" and not (settings.winrm_cert_thumbprint or settings.winrm_ca_bundle):
        raise BuildHostError(
            "winrm_transport basic-https needs the guest's certificate pinned: set winrm_cert_thumbprint "
            "(AIB_QEMU_WINRM_CERT_THUMBPRINT) or winrm_ca_bundle"
        )
    return WinRMAccess(
        username=settings.winrm_user,
        password=password,
        transport=transport,
        cert_thumbprint=settings.winrm_cert_thumbprint,
        ca_bundle=settings.winrm_ca_bundle,
    )


def seeded_access(settings: QemuSettings) -> WinRMAccess:
    """Fresh credentials for the build user the seed creates (NTLM-sealed HTTP)."""
    return WinRMAccess(
        username=check_username(settings.windows_build_user), password=generate_password(), generated=True
    )


def communicator(
    access: WinRMAccess,
    port: int,
    *,
    host: str = "127.0.0.1",
    connect_timeout: float = 10.0,
    operation_timeout: float = 20.0,
    poll_interval: float = 2.0,
) -> WinRMCommunicator:
    """The WinRM communicator reaching a guest whose WinRM port is forwarded to ``host:port``."""
    from aib_sdk.communicators.winrm import WinRMCommunicator

    https = access.transport == "basic-https"
    try:
        return WinRMCommunicator(
            host,
            port,
            username=access.username,
            password=access.password,
            scheme="https" if https else "http",
            auth="basic" if https else "ntlm",
            ca_bundle=access.ca_bundle,
            cert_thumbprint=access.cert_thumbprint,
            connect_timeout=connect_timeout,
            operation_timeout=operation_timeout,
            poll_interval=poll_interval,
        )
    except CommunicatorError as exc:
        raise BuildHostError(str(exc)) from exc


async def wait_ready(
    comm: WinRMCommunicator,
    timeout: float,
    check_running: Callable[[], None],
    *,
    attempt_timeout: float = 15.0,
    interval: float = 2.0,
) -> None:
    """Wait until WinRM answers and a command runs, within ``timeout`` seconds overall.

    Each attempt is bounded by ``attempt_timeout``; ``check_running`` (raising when the VM is gone) runs between
    attempts. Wrong credentials fail at once (:class:`AuthenticationError`); running out of time raises
    :class:`CommunicatorError` with the last reason.
    """
    from aib_sdk.communicators.winrm import AuthenticationError

    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        check_running()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CommunicatorError(f"WinRM did not answer within {timeout:.0f}s ({last})")
        try:
            await comm.wait_ready(min(attempt_timeout, remaining), interval=interval)
            return
        except AuthenticationError:
            raise
        except CommunicatorError as exc:
            last = str(exc) or type(exc).__name__
