"""The build context: a template reads only files under its folder (or ``--context``); outputs replace only their own.

Attacks: a ``File``/``Shell`` step naming ``../secret``, an absolute ``file://`` path, a symlink out of the folder,
a DiskImage source outside; a ``DiskFile`` output pointed at an existing file. Each is refused (exit 1 / failed
before any VM boots) while the legitimate form (a path inside, ``--context``, ``--map-uri``, ``--source``, the same
target's earlier output) still works.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aib_sdk.builder.plan import make_plan
from aib_sdk.cli import main
from aib_sdk.config import Config
from aib_sdk.errors import UsageError
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fakes import FakePlugin, fake_template


def write_json(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


SECRET = b"root:$6$very-secret-hash:19000:0:99999:7:::\n"


def _project(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp/proj`` (the template's folder, with scripts/setup.sh) and ``tmp/secret.txt`` outside it."""
    proj = tmp_path / "proj"
    (proj / "scripts").mkdir(parents=True)
    (proj / "scripts" / "setup.sh").write_text("echo setup\n")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    return proj, secret


def _file_step(source_uri: str) -> dict[str, object]:
    return {"type": "File", "name": "copy", "sourceUri": source_uri, "destination": "/tmp/x"}


def _uploaded(fakes: FakePlugin) -> list[bytes]:
    return [data for m in fakes.world.machines for _, _, data in m.fake_communicator.uploads]


@pytest.mark.parametrize(
    "entry",
    [
        _file_step("../secret.txt"),
        {"type": "Shell", "name": "run", "scriptUri": "../secret.txt"},
        {"type": "Shell", "name": "run", "scriptUri": "scripts/../../secret.txt"},
    ],
    ids=["file-relative", "shell-relative", "dotdot-inside"],
)
def test_relative_escape_is_refused_before_boot(tmp_path: Path, fakes: FakePlugin, capsys, entry) -> None:
    proj, _ = _project(tmp_path)
    template = write_json(proj / "t.json", fake_template(customize=[entry]))
    code = main(["build", str(template), "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 1
    assert "outside the build context" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert fakes.world.machines == []  # nothing booted


def test_absolute_uri_symlink_and_validation_are_refused(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    proj, secret = _project(tmp_path)
    (proj / "link.txt").symlink_to(secret)
    cases = [
        fake_template(customize=[_file_step(secret.as_uri())]),
        fake_template(customize=[_file_step(str(secret))]),
        fake_template(customize=[_file_step("link.txt")]),
        fake_template(validate={"inVMValidations": [{"type": "Shell", "name": "v", "scriptUri": secret.as_uri()}]}),
    ]
    for doc in cases:
        template = write_json(proj / "t.json", doc)
        assert main(["build", str(template), "--progress", "none"]) == 1
        assert "outside the build context" in capsys.readouterr().err
    assert fakes.world.machines == []


def test_files_inside_the_context_still_build(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    proj, _ = _project(tmp_path)
    doc = fake_template(customize=[{"type": "Shell", "name": "setup", "scriptUri": "scripts/setup.sh"}])
    template = write_json(proj / "t.json", doc)
    assert main(["build", str(template), "--progress", "none"]) == 0, capsys.readouterr().err
    assert b"echo setup\n" in _uploaded(fakes)


def test_context_flag_and_map_uri_widen_it(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    proj, _ = _project(tmp_path)
    template = write_json(proj / "t.json", fake_template(customize=[_file_step("../secret.txt")]))
    # The operator widens the context to the parent folder: allowed.
    assert main(["build", str(template), "--progress", "none", "--context", str(tmp_path)]) == 0
    # The operator maps a URI prefix to a folder: trusted.
    doc = fake_template(customize=[_file_step("https://example.invalid/files/secret.txt")])
    mapped = write_json(proj / "m.json", doc)
    args = ["build", str(mapped), "--progress", "none", "--map-uri", f"https://example.invalid/files/={tmp_path}/"]
    assert main(args) == 0, capsys.readouterr().err
    assert _uploaded(fakes).count(SECRET) == 2


@pytest.mark.anyio
async def test_disk_image_source_outside_is_refused_unless_given_by_the_operator(tmp_path: Path) -> None:
    proj, _ = _project(tmp_path)
    disk = tmp_path / "elsewhere" / "base.qcow2"
    doc = {
        "source": {"type": "DiskImage", "uri": disk.as_uri()},
        "distribute": [{"type": "DiskFile", "runOutputName": "d", "uri": (tmp_path / "o.qcow2").as_uri()}],
    }
    template = write_json(proj / "t.json", doc)
    options = BuildOptions(config=Config({}, {"HOME": str(tmp_path)}), plugins=PluginManager())
    with pytest.raises(UsageError, match=r"properties\.source\.uri: .* outside the build context"):
        await make_plan(template, options)
    for key in ("kernel", "initrd"):
        doc["source"] = {"type": "DiskImage", "uri": "base.qcow2", key: "/boot/vmlinuz"}
        with pytest.raises(UsageError, match=rf"properties\.source\.{key}"):
            await make_plan(write_json(proj / "t.json", doc), options)
    # --source is the operator's: trusted wherever it is.
    options.source = {"type": "DiskImage", "uri": disk.as_uri()}
    doc["source"] = {"type": "DiskImage", "uri": "/etc/shadow"}
    plan = await make_plan(write_json(proj / "t.json", doc), options)
    assert plan.context == proj.resolve()


def test_file_output_never_replaces_a_foreign_file(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    proj, _ = _project(tmp_path)
    victim = tmp_path / "victim.db"
    victim.write_bytes(b"precious data")

    def template(uri: Path, name: str = "web") -> Path:
        doc = fake_template(distribute=[{"type": "DiskFile", "runOutputName": "disk", "uri": uri.as_uri()}])
        return write_json(proj / f"{name}.json", doc)

    assert main(["build", str(template(victim)), "--progress", "none"]) != 0
    assert "not an earlier output of this target" in capsys.readouterr().err
    assert victim.read_bytes() == b"precious data" and fakes.world.machines == []
    # The legitimate use: a new file, then the same target again replaces its own earlier output.
    out = tmp_path / "out" / "image.qcow2"
    assert main(["build", str(template(out)), "--progress", "none"]) == 0, capsys.readouterr().err
    assert main(["build", str(template(out)), "--progress", "none"]) == 0, capsys.readouterr().err
    booted = len(fakes.world.machines)
    # Another template's target may not take it over, nor may anyone once the file changed behind our back.
    assert main(["build", str(template(out, "other")), "--progress", "none"]) != 0
    out.write_bytes(b"someone else's file now")
    assert main(["build", str(template(out)), "--progress", "none"]) != 0
    assert out.read_bytes() == b"someone else's file now" and len(fakes.world.machines) == booted


def test_sidecar_manifest_never_replaces_a_foreign_file(tmp_path: Path, fakes: FakePlugin, capsys) -> None:
    proj, _ = _project(tmp_path)
    out = tmp_path / "out" / "image.qcow2"
    out.parent.mkdir()
    (tmp_path / "out" / "image.qcow2.json").write_text("someone's config")
    target = {"type": "DiskFile", "runOutputName": "disk", "uri": out.as_uri(), "artifactTags": {"k": "v"}}
    template = write_json(proj / "t.json", fake_template(distribute=[target]))
    assert main(["build", str(template), "--progress", "none"]) != 0
    assert "image.qcow2.json already exists" in capsys.readouterr().err and not out.exists()
    (tmp_path / "out" / "image.qcow2.json").unlink()
    assert main(["build", str(template), "--progress", "none"]) == 0  # writes both, then may replace both
    assert main(["build", str(template), "--progress", "none"]) == 0, capsys.readouterr().err
    assert '"k": "v"' in (tmp_path / "out" / "image.qcow2.json").read_text()
