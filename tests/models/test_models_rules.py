"""AIB's template rules, each broken once (with the JSON path it is reported at) and kept once."""

from __future__ import annotations

from typing import Any

import pytest

from aib_sdk.errors import TemplateError
from aib_sdk.models.loader import load_template
from aib_sdk.models.specs import LatestVersioning, SharedImageDistributor, SourceVersioning
from aib_sdk.models.template import ValidateSpec
from aib_sdk.plugins.manager import PluginManager

GALLERY = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/d"
HEX = "a" * 64


def issues(pm: PluginManager, props: dict[str, Any]) -> list[str]:
    with pytest.raises(TemplateError) as exc:
        load_template(props, plugins=pm)
    return [str(i) for i in exc.value.issues]


def ok(pm: PluginManager, props: dict[str, Any]) -> Any:
    return load_template(props, plugins=pm).properties


def sig(**fields: Any) -> dict[str, Any]:
    return {"type": "SharedImage", "galleryImageId": GALLERY, "runOutputName": "sig", **fields}


# Scripts --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Shell", "PowerShell"])
def test_script_needs_exactly_one_of_uri_or_inline(pm: PluginManager, props: dict[str, Any], kind: str) -> None:
    props["customize"] = [{"type": kind}]
    assert issues(pm, props) == [
        "customize[0].scriptUri: exactly one of scriptUri or inline is required (NoCustomizerScript)"
    ]
    props["customize"] = [{"type": kind, "inline": []}]
    assert "NoCustomizerScript" in issues(pm, props)[0]
    props["customize"] = [{"type": kind, "inline": ["x"], "scriptUri": "https://x.invalid/s"}]
    assert issues(pm, props) == [
        "customize[0].inline: set only one of scriptUri and inline, not both (NoCustomizerScript)"
    ]
    props["customize"] = [{"type": kind, "scriptUri": "https://x.invalid/s", "sha256Checksum": HEX}]
    assert ok(pm, props).customize[0].sha256_checksum == HEX


def test_sha256_checksum_is_64_hex_or_empty(pm: PluginManager, props: dict[str, Any]) -> None:
    props["customize"] = [
        {"type": "Shell", "scriptUri": "https://x.invalid/s", "sha256Checksum": "abc"},
        {"type": "File", "sourceUri": "https://x.invalid/f", "destination": "/tmp/f", "sha256Checksum": "z" * 64},
    ]
    assert issues(pm, props) == [
        "customize[0].sha256Checksum: sha256Checksum must be 64 hexadecimal digits (or empty)",
        "customize[1].sha256Checksum: sha256Checksum must be 64 hexadecimal digits (or empty)",
    ]
    props["customize"][0]["sha256Checksum"] = ""
    props["customize"][1]["sha256Checksum"] = HEX.upper()
    assert len(ok(pm, props).customize) == 2


def test_run_as_system_needs_run_elevated(pm: PluginManager, props: dict[str, Any]) -> None:
    props["customize"] = [{"type": "PowerShell", "inline": ["x"], "runAsSystem": True}]
    assert issues(pm, props) == ["customize[0].runAsSystem: runAsSystem requires runElevated: true"]
    props["customize"][0]["runElevated"] = True
    step = ok(pm, props).customize[0]
    assert step.run_as_system and step.run_elevated


def test_file_needs_source_and_destination(pm: PluginManager, props: dict[str, Any]) -> None:
    props["customize"] = [{"type": "File", "destination": "/tmp/a"}, {"type": "File", "sourceUri": "https://x/a"}]
    assert issues(pm, props) == [
        "customize[0].sourceUri: File needs sourceUri (the file to copy)",
        "customize[1].destination: File needs destination (the full path in the VM)",
    ]


def test_windows_steps(pm: PluginManager, props: dict[str, Any]) -> None:
    props["customize"] = [
        {"type": "WindowsRestart", "restartTimeout": "5m", "restartCheckCommand": "echo"},
        {"type": "WindowsUpdate", "searchCriteria": "IsInstalled=0", "filters": ["include:$true"], "updateLimit": 20},
    ]
    assert ok(pm, props).customize[1].update_limit == 20
    props["customize"][1]["updateLimit"] = -1
    props["customize"][0]["restartTimeout"] = "5 minutes"
    assert issues(pm, props) == [
        "customize[0].restartTimeout: must be a duration such as 5m, 90s or 1h30m",
        "customize[1].updateLimit: must be >= 0 (got -1)",
    ]
    props["customize"][0]["restartTimeout"] = "1h30m"
    props["customize"][1]["updateLimit"] = 0
    assert ok(pm, props).customize[0].restart_timeout == "1h30m"


def test_unknown_and_missing_types(pm: PluginManager, props: dict[str, Any]) -> None:
    props["customize"] = [{"type": "Foo"}, {"name": "no type"}]
    props["source"] = {"type": "ISO", "sourceURI": "x"}
    assert issues(pm, props) == [
        'source.type: unknown source type "ISO" (installed: ManagedImage, PlatformImage, SharedImageVersion)',
        'customize[0].type: unknown customizer type "Foo" '
        "(installed: File, PowerShell, Shell, WindowsRestart, WindowsUpdate)",
        'customize[1].type: missing "type" (one of: File, PowerShell, Shell, WindowsRestart, WindowsUpdate)',
    ]


def test_wrong_value_types(pm: PluginManager, props: dict[str, Any]) -> None:
    props["buildTimeoutInMinutes"] = "soon"
    props["customize"][0]["inline"] = "echo not a list"
    props["errorHandling"] = {"onCustomizerError": "ignore"}
    assert issues(pm, props) == [
        "customize[0].inline: must be a list (got 'echo not a list')",
        "errorHandling.onCustomizerError: must be one of 'cleanup' or 'abort' (got 'ignore')",
        "buildTimeoutInMinutes: must be an integer (got 'soon')",
    ]


# Validation, error handling, optimize -------------------------------------------------------------------------


def test_validate_section(pm: PluginManager, props: dict[str, Any]) -> None:
    props["validate"] = {
        "continueDistributeOnFailure": True,
        "sourceValidationOnly": False,
        "inVMValidations": [
            {"type": "Shell", "name": "check", "inline": ["test -f /etc/hostname"]},
            {"type": "PowerShell", "scriptUri": "https://x.invalid/v.ps1", "validExitCodes": [0, 3010]},
            {"type": "File", "sourceUri": "https://x.invalid/a", "destination": "/tmp/a"},
        ],
    }
    validation = ok(pm, props).validation
    assert isinstance(validation, ValidateSpec)
    assert validation.continue_distribute_on_failure is True
    assert validation.in_vm_validations is not None and len(validation.in_vm_validations) == 3
    assert validation.in_vm_validations[1].valid_exit_codes == [0, 3010]


def test_validator_rules(pm: PluginManager, props: dict[str, Any]) -> None:
    props["validate"] = {
        "inVMValidations": [{"type": "Shell"}, {"type": "WindowsRestart"}],
        "sourceValidationOnly": 1.5,
    }
    assert issues(pm, props) == [
        "validate.sourceValidationOnly: must be true or false (got 1.5)",
        "validate.inVMValidations[0].scriptUri: exactly one of scriptUri or inline is required (NoValidatorScript)",
        'validate.inVMValidations[1].type: unknown validator type "WindowsRestart" '
        "(installed: File, PowerShell, Shell)",
    ]


def test_error_handling_and_optimize(pm: PluginManager, props: dict[str, Any]) -> None:
    props["errorHandling"] = {"onCustomizerError": "abort", "onValidationError": "cleanup"}
    props["optimize"] = {"vmBoot": {"state": "Enabled"}, "workload": {"state": "Disabled", "scriptUri": "https://x/w"}}
    props["autoRun"] = {"state": "Enabled"}
    props["managedResourceTags"] = {"team": "a"}
    props["additionalDataDisks"] = [{"sizeGB": 10}]
    got = ok(pm, props)
    assert got.error_handling.on_customizer_error == "abort"
    assert got.optimize.vm_boot.state == "Enabled"
    assert got.additional_data_disks[0].size_gb == 10
    props["additionalDataDisks"] = [{"sizeGB": -1}]
    props["optimize"]["vmBoot"]["state"] = "On"
    assert issues(pm, props) == [
        "optimize.vmBoot.state: must be one of 'Enabled' or 'Disabled' (got 'On')",
        "additionalDataDisks[0].sizeGB: must be >= 0 (got -1)",
    ]


# Template-level numbers and vmProfile --------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [0, 6, 240, 960])
def test_build_timeout_allowed(pm: PluginManager, props: dict[str, Any], minutes: int) -> None:
    props["buildTimeoutInMinutes"] = minutes
    assert ok(pm, props).build_timeout_in_minutes == minutes


@pytest.mark.parametrize("minutes", [-1, 1, 5, 961])
def test_build_timeout_refused(pm: PluginManager, props: dict[str, Any], minutes: int) -> None:
    props["buildTimeoutInMinutes"] = minutes
    assert issues(pm, props) == [
        "buildTimeoutInMinutes: buildTimeoutInMinutes must be 0 (the default, 240) or 6 to 960"
    ]


def test_vm_profile(pm: PluginManager, props: dict[str, Any]) -> None:
    props["vmProfile"] = {"vmSize": "Standard_D2_v2", "osDiskSizeGB": 40, "userAssignedIdentities": ["/x"]}
    assert ok(pm, props).vm_profile.os_disk_size_gb == 40
    props["vmProfile"]["osDiskSizeGB"] = -5
    assert issues(pm, props) == ["vmProfile.osDiskSizeGB: must be >= 0 (got -5)"]


def test_isolated_build_network(pm: PluginManager, props: dict[str, Any]) -> None:
    props["vmProfile"] = {"vnetConfig": {"containerInstanceSubnetId": "/aci"}}
    assert issues(pm, props) == [
        "vmProfile.vnetConfig.containerInstanceSubnetId: containerInstanceSubnetId requires subnetId"
    ]
    props["vmProfile"]["vnetConfig"].update(subnetId="/build", proxyVmSize="Standard_A1_v2")
    assert issues(pm, props) == [
        "vmProfile.vnetConfig.proxyVmSize: proxyVmSize must not be set with containerInstanceSubnetId "
        "(no proxy VM is used)"
    ]
    del props["vmProfile"]["vnetConfig"]["proxyVmSize"]
    assert ok(pm, props).vm_profile.vnet_config.subnet_id == "/build"
    props["vmProfile"]["vnetConfig"] = {"subnetId": "/build", "proxyVmSize": "Standard_A1_v2"}
    assert ok(pm, props).vm_profile.vnet_config.proxy_vm_size == "Standard_A1_v2"


# Distribution -------------------------------------------------------------------------------------------------


def test_distribute_required_and_non_empty(pm: PluginManager, props: dict[str, Any]) -> None:
    del props["distribute"]
    assert issues(pm, props) == [
        'distribute: missing required field "distribute" (AIB needs at least one distribution target)'
    ]
    props["distribute"] = []
    assert issues(pm, props) == ["distribute: distribute must list at least one distribution target"]


@pytest.mark.parametrize("name", ["a", "web-1_x.y", "A" * 64])
def test_run_output_name_allowed(pm: PluginManager, props: dict[str, Any], name: str) -> None:
    props["distribute"][0]["runOutputName"] = name
    assert ok(pm, props).distribute[0].run_output_name == name


@pytest.mark.parametrize("name", ["", "has space", "A" * 65, "a/b", "ü"])
def test_run_output_name_refused(pm: PluginManager, props: dict[str, Any], name: str) -> None:
    props["distribute"][0]["runOutputName"] = name
    assert issues(pm, props) == [
        "distribute[0].runOutputName: must match ^[A-Za-z0-9-_.]{1,64}$ (letters, digits, '-', '_', '.'; at most 64)"
    ]


def test_run_output_names_unique(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"].append({"type": "VHD", "runOutputName": "other"})
    props["distribute"].append({"type": "VHD", "runOutputName": "disk"})
    assert issues(pm, props) == ["distribute[2].runOutputName: runOutputName 'disk' is used twice"]


def test_template_name_pattern(pm: PluginManager, props: dict[str, Any]) -> None:
    doc = {"name": "bad name", "identity": {}, "properties": props}
    assert issues(pm, doc) == ["name: template name must match ^[A-Za-z0-9-_.]{1,64}$"]


def test_managed_image_needs_id_and_location(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"] = [{"type": "ManagedImage", "runOutputName": "mi", "imageId": "/x"}]
    assert issues(pm, props) == ['distribute[0].location: missing required field "location"']


def test_shared_image_regions(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"] = [sig(targetRegions=[{"name": "a"}], replicationRegions=["a"])]
    assert issues(pm, props) == [
        "distribute[0].replicationRegions: targetRegions and replicationRegions are mutually exclusive "
        "(replicationRegions is deprecated)"
    ]
    props["distribute"] = [sig(targetRegions=[{"name": "a"}], storageAccountType="Standard_LRS")]
    assert issues(pm, props) == [
        "distribute[0].storageAccountType: storageAccountType is only allowed with replicationRegions "
        "(use targetRegions[].storageAccountType)"
    ]
    props["distribute"] = [sig(replicationRegions=["a"], storageAccountType="Standard_ZRS")]
    assert ok(pm, props).distribute[0].storage_account_type == "Standard_ZRS"
    props["distribute"] = [sig(targetRegions=[{"name": "a", "replicaCount": 2, "storageAccountType": "Premium_LRS"}])]
    target = ok(pm, props).distribute[0]
    assert isinstance(target, SharedImageDistributor) and target.target_regions[0].replica_count == 2
    props["distribute"] = [sig(targetRegions=[{"name": "a", "replicaCount": 0}])]
    assert issues(pm, props) == ["distribute[0].targetRegions[0].replicaCount: must be >= 1 (got 0)"]


def test_shared_image_versioning(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"] = [
        sig(versioning={"scheme": "Latest", "major": 2}, excludeFromLatest=True, replicationMode="Shallow")
    ]
    versioning = ok(pm, props).distribute[0].versioning
    assert isinstance(versioning, LatestVersioning) and versioning.major == 2
    props["distribute"] = [sig(versioning={"scheme": "Source"})]
    assert isinstance(ok(pm, props).distribute[0].versioning, SourceVersioning)
    props["distribute"] = [sig(versioning={"scheme": "Latest", "major": -2})]
    assert issues(pm, props) == ["distribute[0].versioning.major: must be >= -1 (got -2)"]
    props["distribute"] = [sig(versioning={"scheme": "Newest"})]
    assert issues(pm, props) == [
        "distribute[0].versioning.scheme: unknown versioning scheme 'Newest' (expected: Latest, Source)"
    ]


def test_plan_info_needs_all_three(pm: PluginManager, props: dict[str, Any]) -> None:
    props["source"]["planInfo"] = {"planName": "a", "planProduct": "b"}
    assert issues(pm, props) == ['source.planInfo.planPublisher: missing required field "planPublisher"']
