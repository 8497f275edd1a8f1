"""A full Builder run on the tiny guest (real QEMU under TCG) publishing to S3 in two regions and as a VHD."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from aib_provider_qemu import hooks as qemu_hooks  # the test suite installs every provider
from aib_provider_s3_vhd import hooks as s3_hooks
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.events import TargetStatus
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.recorder import EventRecorder

pytestmark = [pytest.mark.anyio, pytest.mark.vm]


async def test_build_publishes_to_two_regions_and_a_vhd(
    s3lab, tmp_path: Path, tiny_guest_source, tiny_guest_cache: Path
):
    eu, us = await s3lab.bucket("eu-west-1"), await s3lab.bucket("us-west-2")
    vhd_bucket = await s3lab.bucket("us-east-1")
    recorder = EventRecorder()
    template = {
        "source": tiny_guest_source,
        "customize": [{"type": "Shell", "name": "mark", "inline": ["echo s3-built | sudo tee /etc/aib-s3-marker"]}],
        "distribute": [
            {
                "type": "S3Image",
                "runOutputName": "s3img",
                "key": "tiny/1.0/disk.qcow2",
                "format": "qcow2",
                "regions": [{"bucket": eu, "region": "eu-west-1"}, {"bucket": us, "region": "us-west-2"}],
            },
            {"type": "VHD", "runOutputName": "vhd", "uri": f"s3://{vhd_bucket}/tiny/disk.vhd"},
        ],
    }
    env = dict(os.environ, AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(tiny_guest_cache))
    options = BuildOptions(
        config=Config({}, env),
        plugins=PluginManager(entry_points=False, plugins=[qemu_hooks, s3_hooks]),
        build_host="qemu",
        on_event=recorder,
        timeout=900,
        template_name="s3-vm",
    )
    result = await Builder(template, options=options).run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    s3img, vhd = result.run_outputs["s3img"], result.run_outputs["vhd"]
    assert s3img.artifact_uri == f"s3://{eu}/tiny/1.0/disk.qcow2"
    assert vhd.artifact_uri == f"s3://{vhd_bucket}/tiny/disk.vhd"

    a = await s3lab.get(eu, "tiny/1.0/disk.qcow2", "eu-west-1")
    b = await s3lab.get(us, "tiny/1.0/disk.qcow2", "us-west-2")
    assert a == b and a[:4] == b"QFI\xfb"  # a qcow2 image, byte-identical in both regions
    head = await s3lab.head(us, "tiny/1.0/disk.qcow2", "us-west-2")
    assert head["Metadata"]["sha256"] == hashlib.sha256(b).hexdigest()
    assert head["Metadata"]["aib-run-id"] == result.run_id
    disk = await s3lab.get(vhd_bucket, "tiny/disk.vhd")
    assert disk[-512:].startswith(b"conectix") and (len(disk) - 512) % (1024 * 1024) == 0  # fixed VHD, MiB aligned
    regions = {
        (e.run_output_name, e.region) for e in recorder.of_kind(TargetStatus) if e.state == "Succeeded" and e.region
    }
    assert {("s3img", "eu-west-1"), ("s3img", "us-west-2"), ("vhd", "us-east-1")} <= regions
