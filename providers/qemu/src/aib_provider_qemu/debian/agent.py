"""The build-boot agent baked into the Debian base: a build VM is ready without waiting for cloud-init.

When the boot's NoCloud seed (the ``cidata`` disk) carries aib-sdk's marker file (:data:`MARKER`), the agent, ordered
before ``cloud-init-local.service``, creates the build user (passwordless sudo, the client key), installs the pinned
host keys and flags the boot in ``/run`` so that cloud-init's units (and e2scrub_reap) skip (a drop-in condition on
a ``/run`` file, so nothing of it persists); once sshd runs, it takes a DHCP lease and prints :data:`READY_LINE` on
the serial console. The agent is POSIX sh and awk reading the seed's fixed user-data layout: under TCG, starting
Python and importing yaml cost 3.4 s of the boot's critical path.

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
SKIPPED_UNITS = (*CLOUD_INIT_UNITS, "e2scrub_reap.service")
"""Units a build boot skips: cloud-init (the agent provisioned the boot) and e2scrub_reap (removes leftover e2scrub
LVM snapshots; the image has no LVM), about a second under TCG."""

SCRIPT = rf"""#!/bin/sh
# aib-sdk build-boot agent: see aib_provider_qemu.debian.agent. Does nothing without the aib marker in the seed.
# POSIX sh (dash) + awk: under TCG a Python start costs seconds; this costs tens of milliseconds.
STATE={STATE}
MOUNT=$STATE/seed
UD=$STATE/user-data

say() {{
  for tty in /dev/ttyS0 /dev/console; do
    if echo "$*" 2>/dev/null > "$tty"; then return 0; fi
  done
}}

# The fixed layout of aib-sdk's user-data (aib_provider_qemu.seed.user_data): two-space indents, block scalars.
value() {{ awk -v k="    $1: " 'index($0, k) == 1 {{ print substr($0, length(k) + 1); exit }}' "$UD"; }}
block() {{
  awk -v k="  $1: |" '$0 == k {{ f = 1; next }} f && /^    / {{ print substr($0, 5); next }} {{ f = 0 }}' "$UD"
}}
top() {{ awk -v k="  $1: " 'index($0, k) == 1 {{ print substr($0, length(k) + 1); exit }}' "$UD"; }}
keys() {{
  awk '/^    ssh_authorized_keys:/ {{ f = 1; next }} f && /^      - / {{ print substr($0, 9); next }} {{ f = 0 }}' "$UD"
}}

provision() {{
  name=$(awk '/^  - name: / {{ print $3; exit }}' "$UD")
  case "$name" in
    ""|*[!a-z0-9_.-]*|[!a-z_]*) echo "unsafe or missing user name '$name'"; return 1 ;;
  esac
  shell=$(value shell); shell=${{shell:-/bin/sh}}
  sudo=$(value sudo | sed 's/^"//; s/"$//')
  id -u "$name" >/dev/null 2>&1 || useradd -m -s "$shell" -c "aib-sdk build user" "$name" || return 1
  home=$(getent passwd "$name" | cut -d: -f6)
  install -d -m 700 -o "$name" -g "$(id -g "$name")" "$home/.ssh" || return 1
  keys > "$home/.ssh/authorized_keys" && chmod 600 "$home/.ssh/authorized_keys" || return 1
  chown "$name:$(id -g "$name")" "$home/.ssh/authorized_keys" || return 1
  if [ -n "$sudo" ]; then
    printf '%s %s\n' "$name" "$sudo" > /etc/sudoers.d/90-aib-agent-users && chmod 440 /etc/sudoers.d/90-aib-agent-users
  fi
  if [ -n "$(block ed25519_private)" ]; then rm -f /etc/ssh/ssh_host_*; fi
  for kind in ed25519 rsa ecdsa; do
    private=$(block "${{kind}}_private")
    [ -n "$private" ] || continue
    key="/etc/ssh/ssh_host_${{kind}}_key"
    printf '%s\n' "$private" > "$key" && chmod 600 "$key" || return 1
    top "${{kind}}_public" > "$key.pub" && chmod 644 "$key.pub"
  done
}}

early() {{
  device=$(blkid -l -o device -t LABEL=cidata 2>/dev/null || blkid -l -o device -t LABEL=CIDATA 2>/dev/null)
  [ -n "$device" ] || return 0
  mkdir -p -m 700 "$MOUNT"
  if ! out=$(mount -t iso9660 -o ro,nosuid,nodev,noexec "$device" "$MOUNT" 2>&1); then
    say "aib-agent: cannot read the seed ($out); cloud-init runs"
    return 0
  fi
  version=$(cat "$MOUNT/{MARKER}" 2>/dev/null)
  if [ "$version" = 1 ]; then (umask 077; cp "$MOUNT/user-data" "$UD"); fi
  umount "$MOUNT"
  [ -n "$version" ] || return 0
  if [ "$version" != 1 ]; then
    say "aib-agent: seed format '$version' is not known to this image; cloud-init runs"
    return 0
  fi
  if ! out=$(provision 2>&1); then
    rm -f "$UD"
    say "aib-agent: provisioning failed ($(echo "$out" | tail -n 1)); cloud-init runs"
    return 1
  fi
  rm -f "$UD"
  : > "$STATE/active"
  say "aib-agent: build user and host keys installed; cloud-init skipped for this boot"
}}

ready() {{
  nics=$(ls /sys/class/net | grep -v -e '^lo$' -e '^sit' -e '^tunl')
  if [ -n "$nics" ] && ! timeout 60 dhclient -4 -1 -v -lf "$STATE/dhclient.leases" -pf "$STATE/dhclient.pid" \
      $nics > "$STATE/dhclient.log" 2>&1; then
    say "aib-agent: dhclient failed: $(tail -n 3 "$STATE/dhclient.log" | tr '\n' '|')"
  fi
  addresses=$(ip -4 -o addr show scope global | awk '{{ print $4 }}' | tr '\n' ' ')
  say "aib-agent: network ${{addresses:-(no IPv4 address)}}"
  say "{READY_LINE}"
}}

case "$1" in
  early) mkdir -p -m 700 "$STATE" && early ;;
  ready) mkdir -p -m 700 "$STATE" && ready ;;
esac
"""

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
    for unit in SKIPPED_UNITS:
        dropins = systemd / f"{unit}.d"
        dropins.mkdir(parents=True, exist_ok=True)
        (dropins / "50-aib-agent.conf").write_text(CLOUD_INIT_DROPIN, encoding="utf-8")
