"""``aib gallery …``: the sub-commands this provider adds, run through their argparse parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from aib_provider_local_gallery.cli import add_commands
from aib_provider_local_gallery.distributors import LocalSharedImageDistributor
from aib_sdk.models.specs import SharedImageDistributor

pytestmark = pytest.mark.anyio
RG = "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute"


async def aib(
    gallery: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("AIB_GALLERY_ROOT", str(gallery.root))
    monkeypatch.setenv("AIB_LOCAL_GALLERY_CHUNK_SIZE", "262144")
    monkeypatch.delenv("AIB_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(gallery.tmp_path / "no-config"))
    parser = argparse.ArgumentParser(prog="aib")
    add_commands(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    code = await args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_cli_round_trip(gallery: Any, small_qcow2: Path, capsys: Any, monkeypatch: Any) -> None:
    code, out, _ = await aib(gallery, capsys, monkeypatch, "gallery", "create", "gal", "--resource-group", "rg")
    assert code == 0 and out.strip() == f"{RG}/galleries/gal"
    code, _, err = await aib(gallery, capsys, monkeypatch, "gallery", "create", "gal", "--resource-group", "rg")
    assert code == 1 and "already exists" in err
    code, out, _ = await aib(
        gallery,
        capsys,
        monkeypatch,
        "gallery",
        "definition",
        "create",
        "gal",
        "linux",
        "--publisher",
        "acme",
        "--offer",
        "base",
        "--sku",
        "gen2",
        "--os-type",
        "Linux",
        "--os-state",
        "Generalized",
        "--hyper-v-generation",
        "V2",
        "--json",
    )
    definition = json.loads(out)
    assert code == 0 and definition["id"] == f"{RG}/galleries/gal/images/linux"
    assert definition["hyperVGeneration"] == "V2" and definition["location"] == "local"

    spec = SharedImageDistributor.model_validate(
        {"type": "SharedImage", "runOutputName": "o", "galleryImageId": definition["id"]}
    )
    ctx = gallery.ctx()
    for exclude in (False, True):
        await LocalSharedImageDistributor().publish(
            gallery.artifact_of(small_qcow2, hyper_v_generation="V2"),
            spec.model_copy(update={"exclude_from_latest": exclude}),
            ctx,
        )

    code, out, _ = await aib(gallery, capsys, monkeypatch, "gallery", "versions", "gal", "linux")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].split()[:2] == ["0.0.1", "latest"] and lines[1].split()[:2] == ["0.0.2", "excluded"]
    code, out, _ = await aib(gallery, capsys, monkeypatch, "gallery", "list", "--json")
    listing = json.loads(out)
    assert listing["galleries"][0]["definitions"][0]["versions"] == ["0.0.1", "0.0.2"]
    assert listing["galleries"][0]["definitions"][0]["latest"] == "0.0.1"
    code, out, _ = await aib(gallery, capsys, monkeypatch, "gallery", "show", f"{definition['id']}/versions/latest")
    shown = json.loads(out)
    assert shown["name"] == "0.0.1" and shown["regions"][0]["sha256"] == gallery.sha256_of(small_qcow2)

    code, _, err = await aib(gallery, capsys, monkeypatch, "gallery", "delete", definition["id"])
    assert code == 1 and "still holds versions" in err
    for version in ("0.0.1", "0.0.2"):
        code, out, _ = await aib(
            gallery, capsys, monkeypatch, "gallery", "delete", f"{definition['id']}/versions/{version}"
        )
        assert code == 0 and "deleted" in out
    code, out, _ = await aib(gallery, capsys, monkeypatch, "gallery", "versions", "gal", "linux", "-g", "rg")
    assert out.strip() == "no versions"
    code, _, err = await aib(gallery, capsys, monkeypatch, "gallery", "show", f"{RG}/galleries/../images/x")
    assert code == 1 and "invalid gallery name" in err
