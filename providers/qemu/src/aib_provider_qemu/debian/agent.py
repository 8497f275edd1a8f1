"""The build-boot agent baked into the Debian base: a build VM is ready without waiting for cloud-init.

When the boot's NoCloud seed (the ``cidata`` disk) carries aib-sdk's marker file (:data:`MARKER`), the agent, ordered
before ``cloud-init-local.service``, creates the build user (passwordless sudo, the client key), installs the pinned
host keys and flags the boot in ``/run`` so that cloud-init's units skip (a drop-in condition on a ``/run`` file, so
nothing of it persists); once sshd runs, it takes a DHCP lease and prints :data:`READY_LINE` on the serial console.

Without the marker (the published image's real first boot, any other datasource) the agent does nothing and
cloud-init runs as installed: its package files and state (``/var/lib/cloud``) are never touched by a build boot.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aib_provider_qemu.seed import AGENT_MARKER

MARKER = AGENT_MARKER
"""Name of the seed file that asks for the agent (its content is the seed format version)."""
READY_LINE = "aib-agent: ready"
STATE = "/run/aib-agent"
ACTIVE = f"{STATE}/active"
SCRIPT_PATH = "usr/lib/aib-agent/aib-agent"
CLOUD_INIT_UNITS = ("cloud-init-local.service", "cloud-init.service", "cloud-config.service", "cloud-final.service")

SCRIPT = f'''#!/usr/bin/python3
"""aib-sdk build-boot agent: see aib_provider_qemu.debian.agent. Does nothing without the aib marker in the seed."""
import os
import pwd
import subprocess
import sys

STATE = "{STATE}"
MOUNT = STATE + "/seed"


def say(text):
    for path in ("/dev/ttyS0", "/dev/console"):
        try:
            with open(path, "w") as fh:
                fh.write(text + "\\n")
            return
        except OSError:
            continue


def run(*args, **kw):
    return subprocess.run(list(args), check=True, **kw)


def seed_device():
    for label in ("cidata", "CIDATA"):
        out = subprocess.run(["blkid", "-l", "-o", "device", "-t", "LABEL=" + label],
                             capture_output=True, text=True).stdout.strip()
        if out:
            return out
    return None


def read_seed():
    device = seed_device()
    if device is None:
        return None
    os.makedirs(MOUNT, mode=0o700, exist_ok=True)
    run("mount", "-t", "iso9660", "-o", "ro,nosuid,nodev,noexec", device, MOUNT)
    try:
        if not os.path.exists(os.path.join(MOUNT, "{MARKER}")):
            return None
        with open(os.path.join(MOUNT, "user-data")) as fh:
            return fh.read()
    finally:
        subprocess.run(["umount", MOUNT])


def write(path, text, mode, owner=None):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def provision(config):
    user = config["users"][0]
    name = user["name"]
    try:
        pwd.getpwnam(name)
    except KeyError:
        run("useradd", "-m", "-s", user.get("shell", "/bin/sh"), "-c", user.get("gecos", name), name)
    entry = pwd.getpwnam(name)
    ssh_dir = os.path.join(entry.pw_dir, ".ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    os.chown(ssh_dir, entry.pw_uid, entry.pw_gid)
    keys = "".join(k.strip() + "\\n" for k in user.get("ssh_authorized_keys", []))
    write(os.path.join(ssh_dir, "authorized_keys"), keys, 0o600, entry)
    if user.get("sudo"):
        write("/etc/sudoers.d/90-aib-agent-users", "%s %s\\n" % (name, user["sudo"]), 0o440)
    host_keys = config.get("ssh_keys") or {{}}
    if host_keys:
        for old in os.listdir("/etc/ssh"):
            if old.startswith("ssh_host_"):
                os.unlink(os.path.join("/etc/ssh", old))
    for kind in ("ed25519", "rsa", "ecdsa"):
        private = host_keys.get(kind + "_private")
        if private:
            write("/etc/ssh/ssh_host_%s_key" % kind, private.strip() + "\\n", 0o600)
            write("/etc/ssh/ssh_host_%s_key.pub" % kind, host_keys[kind + "_public"].strip() + "\\n", 0o644)


def early():
    try:
        text = read_seed()
    except (OSError, subprocess.CalledProcessError) as exc:
        say("aib-agent: cannot read the seed (%s); cloud-init runs" % exc)
        return 0
    if text is None:
        return 0
    import yaml

    try:
        provision(yaml.safe_load(text))
    except Exception as exc:  # report on the console, leave the boot to cloud-init
        say("aib-agent: provisioning failed (%s: %s); cloud-init runs" % (type(exc).__name__, exc))
        return 1
    open(STATE + "/active", "w").close()
    say("aib-agent: build user and host keys installed; cloud-init skipped for this boot")
    return 0


def ready():
    nics = sorted(n for n in os.listdir("/sys/class/net") if n != "lo" and not n.startswith(("sit", "tunl")))
    if nics:
        with open(STATE + "/dhclient.log", "w") as log:
            code = subprocess.run(["timeout", "60", "dhclient", "-4", "-1", "-v", "-lf", STATE + "/dhclient.leases",
                                   "-pf", STATE + "/dhclient.pid", *nics], stdout=log, stderr=log).returncode
        if code != 0:
            with open(STATE + "/dhclient.log") as log:
                say("aib-agent: dhclient failed (exit %d): %s" % (code, " | ".join(log.read().splitlines()[-3:])))
    addresses = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                               text=True).stdout.split()
    say("aib-agent: network %s" % " ".join(a for a in addresses if "/" in a) or "(no IPv4 address)")
    say("{READY_LINE}")
    return 0


if __name__ == "__main__":
    os.makedirs(STATE, mode=0o700, exist_ok=True)
    sys.exit(early() if sys.argv[1:] == ["early"] else ready())
'''

EARLY_UNIT = f"""[Unit]
Description=aib-sdk build-boot agent (build user and host keys from an aib seed)
Documentation=https://github.com/aib-sdk
DefaultDependencies=no
After=systemd-remount-fs.service systemd-udev-trigger.service
Before=cloud-init-local.service sysinit.target ssh.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/{SCRIPT_PATH} early
StandardOutput=journal+console

[Install]
WantedBy=sysinit.target
"""

READY_UNIT = f"""[Unit]
Description=aib-sdk build-boot agent (network and ready line once sshd runs)
ConditionPathExists={ACTIVE}
After=ssh.service networking.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/{SCRIPT_PATH} ready

[Install]
WantedBy=multi-user.target
"""

CLOUD_INIT_DROPIN = f"""# aib-sdk: skipped only during a build boot the aib agent provisioned; inert otherwise.
[Unit]
ConditionPathExists=!{ACTIVE}
"""

UNITS: dict[str, tuple[str, str]] = {
    "aib-agent.service": (EARLY_UNIT, "sysinit.target"),
    "aib-agent-ready.service": (READY_UNIT, "multi-user.target"),
}


def digest() -> str:
    """Digest of everything the agent installs (part of the base image's cache key)."""
    parts = [SCRIPT, CLOUD_INIT_DROPIN, *(text for text, _ in UNITS.values())]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def install(root: Path) -> None:
    """Install and enable the agent in a root tree (sync; call in a worker thread)."""
    script = root / SCRIPT_PATH
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(SCRIPT, encoding="utf-8")
    script.chmod(0o755)
    systemd = root / "etc" / "systemd" / "system"
    systemd.mkdir(parents=True, exist_ok=True)
    for name, (text, target) in UNITS.items():
        (systemd / name).write_text(text, encoding="utf-8")
        wants = systemd / f"{target}.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(f"/etc/systemd/system/{name}")
    for unit in CLOUD_INIT_UNITS:
        dropins = systemd / f"{unit}.d"
        dropins.mkdir(parents=True, exist_ok=True)
        (dropins / "50-aib-agent.conf").write_text(CLOUD_INIT_DROPIN, encoding="utf-8")
