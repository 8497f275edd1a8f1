from pathlib import Path

import pytest
from aib_provider_hello import hooks
from aib_provider_hello.provider import Folder, Motd

from aib_sdk.testing.conformance import CustomizerConformance, DistributorConformance
from aib_sdk.testing.fakes import fake_template


class TestMotd(CustomizerConformance):
    customizer = Motd

    def step(self, where: Path) -> dict:
        return {"type": "Motd", "message": "built by aib"}


class TestFolder(DistributorConformance):
    distributor = Folder

    def target(self, where: Path) -> dict:
        return {"type": "Folder", "path": str(where), "runOutputName": "web"}

    def published(self, where: Path) -> list[str]:
        return sorted(p.name for p in where.glob("*")) if where.is_dir() else []


@pytest.mark.anyio
async def test_a_build_uses_both(aib_register, aib_fakes, aib_build, tmp_path: Path) -> None:
    aib_register(hooks, name="aib-provider-hello")
    aib_fakes.world.on_command("tee /etc/motd", stdout="built by aib\n")
    template = fake_template(steps=0, targets=0)
    template["customize"] = [{"type": "Motd", "message": "built by aib"}]
    template["distribute"] = [{"type": "Folder", "path": str(tmp_path), "runOutputName": "web"}]
    result = await aib_build(template)
    assert result.run_state == "Succeeded" and (tmp_path / "web.qcow2").is_file()
