"""The Debian base's build-boot agent as installed in a root tree, and the seed marker that enables it (no VM)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import asyncssh
import pycdlib
import pytest

from aib_provider_qemu import seed
from aib_provider_qemu.debian import agent
from aib_provider_qemu.debian.source import OFFERS, cache_key

pytestmark = pytest.mark.anyio


def test_install_enables_the_agent_and_makes_cloud_init_skip_only_on_flagged_boots(tmp_path: Path) -> None:
    agent.install(tmp_path)
    script = tmp_path / agent.SCRIPT_PATH
    assert os.access(script, os.X_OK)
    assert script.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(script)], check=True)  # valid POSIX sh for the guest's dash
    systemd = tmp_path / "etc/systemd/system"
    early = systemd / "sysinit.target.wants/aib-agent.service"
    ready = systemd / "multi-user.target.wants/aib-agent-ready.service"
    assert os.readlink(early) == "/etc/systemd/system/aib-agent.service"
    assert os.readlink(ready) == "/etc/systemd/system/aib-agent-ready.service"
    early_unit = (systemd / "aib-agent.service").read_text(encoding="utf-8")
    assert "Before=cloud-init-local.service" in early_unit and "DefaultDependencies=no" in early_unit
    assert f"ConditionPathExists={agent.ACTIVE}" in (systemd / "aib-agent-ready.service").read_text(encoding="utf-8")
    assert "e2scrub_reap.service" in agent.SKIPPED_UNITS
    for unit in agent.SKIPPED_UNITS:
        dropin = (systemd / f"{unit}.d/50-aib-agent.conf").read_text(encoding="utf-8")
        assert f"ConditionPathExists=!{agent.ACTIVE}" in dropin  # a /run flag: nothing persists in the image
    assert agent.ACTIVE.startswith("/run/")
    agent.install(tmp_path)  # idempotent


async def test_the_seed_carries_the_agent_marker_next_to_plain_cloud_config(tmp_path: Path) -> None:
    keys = await seed.generate_keys()
    path = tmp_path / "seed.iso"
    await seed.write_seed(path, user="packer", keys=keys, instance_id="aib-x")
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        names = {child.file_identifier().decode() for child in iso.list_children(rr_path="/")}
        assert {"USERDATA.;1", "METADATA.;1", "AIBAGENT.;1"} <= names
        rr = {iso.get_record(rr_path=f"/{n}").rock_ridge.name().decode() for n in ("user-data", "aib-agent")}
        assert rr == {"user-data", "aib-agent"}
    finally:
        iso.close()
    assert agent.MARKER == seed.AGENT_MARKER


async def test_the_agent_reads_the_build_user_and_host_keys_from_the_seeds_user_data(tmp_path: Path) -> None:
    """The shell agent's parsers (run here by the host's sh and awk) against the user-data the seed writes."""
    keys = await seed.generate_keys()
    user_data = tmp_path / "user-data"
    user_data.write_text(seed.user_data("packer", keys), encoding="utf-8")
    script = tmp_path / "aib-agent"
    script.write_text(agent.SCRIPT, encoding="utf-8")

    def ask(function: str) -> str:
        out = subprocess.run(
            ["sh", "-c", f'. "$0"; UD="$1"; {function}', str(script), str(user_data)],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    assert ask("awk '/^  - name: / { print $3; exit }' \"$UD\"").strip() == "packer"
    assert ask("value shell").strip() == "/bin/sh"
    assert ask("value sudo | sed 's/^\"//; s/\"$//'").strip() == "ALL=(ALL) NOPASSWD:ALL"
    assert ask("keys").splitlines() == [keys.client_public]
    for kind, key in keys.host.items():
        public = bytes(key.export_public_key("openssh")).decode().strip()
        private = asyncssh.import_private_key(ask(f"block {kind}_private"))
        assert bytes(private.export_public_key("openssh")).decode().strip() == public
        assert ask(f"top {kind}_public").strip() == public
    assert ask("block nothing_private") == ""


def test_the_agent_is_part_of_the_base_image_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = cache_key("20250510T085243Z", OFFERS[0])
    monkeypatch.setattr(agent, "SCRIPT", agent.SCRIPT + "# changed\n")
    assert cache_key("20250510T085243Z", OFFERS[0]) != before
