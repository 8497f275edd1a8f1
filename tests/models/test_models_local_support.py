"""Every AIB property a local build cannot honour is a warning (``aib validate`` and the build's Warning events);
placeholders in every field a run uses refuse the build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aib_sdk.builder.plan import MissingParamsError, make_plan
from aib_sdk.cli import main
from aib_sdk.config import Config
from aib_sdk.models.loader import load_template, validate_document
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager

SOURCE = {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "latest"}
LOCAL_DEF = "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/d"
AZURE_DEF = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/d"
EXPECTED = {
    "identity": "not used locally",
    "tags": "not applied locally",
    "properties.vmProfile.userAssignedIdentities": "not applicable locally: the build VM gets no managed identity",
    "properties.vmProfile.vnetConfig.proxyVmSize": "not applicable locally: no proxy VM",
    "properties.source.planInfo": "not applicable locally: no Marketplace plan",
    "properties.autoRun": "not applicable locally: Azure runs the build when the template is created",
    "properties.optimize.workload": "names no scriptUri",
    "properties.distribute[0].targetRegions[0].storageAccountType": "recorded in the local gallery",
}


def template(**props: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "source": {**SOURCE, "planInfo": {"planName": "p", "planProduct": "q", "planPublisher": "r"}},
        "customize": [{"type": "Shell", "name": "x", "inline": ["true"]}],
        "vmProfile": {
            "vmSize": "Standard_D2s_v3",
            "userAssignedIdentities": ["/subscriptions/s/resourceGroups/r/providers/x/userAssignedIdentities/u"],
            "vnetConfig": {"subnetId": "/subscriptions/s/x/subnets/build", "proxyVmSize": "Standard_A1_v2"},
        },
        "autoRun": {"state": "Enabled"},
        "optimize": {"workload": {"state": "Enabled"}},
        "managedResourceTags": {"team": "infra"},
        "stagingResourceGroup": "/subscriptions/s/resourceGroups/aib-staging",
        "distribute": [
            {
                "type": "SharedImage",
                "runOutputName": "sig",
                "galleryImageId": LOCAL_DEF,
                "targetRegions": [{"name": "westus", "storageAccountType": "Premium_LRS"}],
                "replicationMode": "Shallow",
            }
        ],
    }
    base.update(props)
    return {
        "type": "Microsoft.VirtualMachineImages/imageTemplates",
        "apiVersion": "2025-10-01",
        "name": "web",
        "location": "westus",
        "tags": {"a": "b"},
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {"/subscriptions/s/id": {}}},
        "properties": base,
    }


def test_each_unhonoured_property_is_one_warning_naming_its_path() -> None:
    errors, warnings = validate_document(template(), plugins=PluginManager(entry_points=False))
    assert errors == []
    found = {w.path: w.message for w in warnings}
    assert set(found) == set(EXPECTED), found
    for path, start in EXPECTED.items():
        assert start in found[path], (path, found[path])
    # honoured locally, so no warning: subnetId (mapped by [qemu.networks]), replicationMode, managedResourceTags …


def test_container_subnet_and_azure_galleries() -> None:
    props = template()["properties"]
    props["vmProfile"]["vnetConfig"] = {"subnetId": "/s/subnets/a", "containerInstanceSubnetId": "/s/subnets/aci"}
    props["distribute"][0]["galleryImageId"] = AZURE_DEF  # Azure honours storageAccountType
    loaded = load_template(props, plugins=PluginManager(entry_points=False))
    paths = [w.path for w in loaded.warnings]
    assert "vmProfile.vnetConfig.containerInstanceSubnetId" in paths
    assert not [p for p in paths if p.endswith("storageAccountType")]
    # --profile local turns the gallery into the local one, whose replicas have no storage type
    local = load_template(props, plugins=PluginManager(entry_points=False), profile="local")
    assert "distribute[0].targetRegions[0].storageAccountType" in [w.path for w in local.warnings]


def test_aib_validate_prints_the_warnings_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIB_DISABLE_PLUGINS", "")
    path = tmp_path / "t.json"
    path.write_text(json.dumps(template()))
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    for json_path, start in EXPECTED.items():
        assert any(line.startswith(f"{path}:{json_path}: warning: ") and start in line for line in lines), json_path


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        ("additionalDataDisks", [{"sizeGB": "<dataDiskGB>"}], "dataDiskGB"),
        ("errorHandling", {"onCustomizerError": "<onError>"}, "onError"),
        ("optimize", {"vmBoot": {"state": "<vmBootState>"}}, "vmBootState"),
        ("vmProfile", {"vnetConfig": {"subnetId": "<subnet>"}}, "subnet"),
    ],
)
async def test_placeholders_in_every_used_field_refuse_the_build(field: str, value: Any, name: str) -> None:
    props = {"source": SOURCE, "distribute": [{"type": "VHD", "runOutputName": "v"}], field: value}
    options = BuildOptions(config=Config({}, {}), plugins=PluginManager(entry_points=False))
    with pytest.raises(MissingParamsError) as refused:
        await make_plan(props, options)
    assert refused.value.names == [name]
    assert f"--param {name}=VALUE" in str(refused.value)
