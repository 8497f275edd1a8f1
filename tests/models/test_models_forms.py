"""Template forms: bare properties, one resource, ARM deployments; envelopes, API versions, selection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aib_sdk.errors import TemplateError, UsageError
from aib_sdk.models.loader import find_image_templates, load_template, read_json_file, validate_document
from aib_sdk.models.specs import DiskFileDistributor, PlatformImageSource, ShellCustomizer
from aib_sdk.models.template import TemplateProperties
from aib_sdk.plugins.manager import PluginManager


def resource(props: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    return {"type": "Microsoft.VirtualMachineImages/imageTemplates", "name": "web", **envelope, "properties": props}


def errors_of(exc: pytest.ExceptionInfo[TemplateError]) -> list[str]:
    return [str(i) for i in exc.value.issues]


def test_bare_properties(pm: PluginManager, props: dict[str, Any]) -> None:
    loaded = load_template(props, plugins=pm)
    assert isinstance(loaded.properties, TemplateProperties)
    assert isinstance(loaded.properties.source, PlatformImageSource)
    assert isinstance(loaded.properties.customize and loaded.properties.customize[0], ShellCustomizer)
    assert isinstance(loaded.properties.distribute[0], DiskFileDistributor)
    assert loaded.name is None and loaded.path_prefix == "" and loaded.api_version is None
    assert loaded.raw_properties == props
    assert loaded.warnings == [] and loaded.unresolved == []


@pytest.mark.parametrize(
    "kind",
    [
        "Microsoft.VirtualMachineImages/imageTemplates",
        "Microsoft.VirtualMachineImages/imageTemplate",
        "Microsoft.VirtualMachineImages",
    ],
)
def test_resource_forms_and_envelope(pm: PluginManager, props: dict[str, Any], kind: str) -> None:
    doc = resource(
        props,
        type=kind,
        apiVersion="2024-02-01",
        location="westus2",
        tags={"a": "b"},
        identity={"type": "UserAssigned", "userAssignedIdentities": {"/subscriptions/x/id": {}}},
        dependsOn=[],
        id="/subscriptions/s/rg/x",
        systemData={"createdBy": "me"},
    )
    loaded = load_template(doc, plugins=pm)
    assert loaded.name == "web"
    assert loaded.api_version == "2024-02-01"
    assert loaded.path_prefix == "properties"
    # The envelope is accepted; what a local build cannot use is said, never dropped in silence.
    assert [(w.path, w.message.split(":")[0]) for w in loaded.warnings] == [
        ("identity", "not used locally"),
        ("tags", "not applied locally"),
    ]


def test_read_only_response_fields_are_accepted(pm: PluginManager, props: dict[str, Any]) -> None:
    props.update(
        provisioningState="Succeeded",
        provisioningError={"provisioningErrorCode": "Other", "message": "x"},
        lastRunStatus={"runState": "Succeeded", "runSubState": "Distributing", "message": ""},
        exactStagingResourceGroup="/subscriptions/s/resourceGroups/IT_x",
    )
    props["source"]["exactVersion"] = "1.2.3"
    loaded = load_template(resource(props), plugins=pm)
    assert loaded.properties.provisioning_state == "Succeeded"


def test_unknown_envelope_field_rejected(pm: PluginManager, props: dict[str, Any]) -> None:
    with pytest.raises(TemplateError) as exc:
        load_template(resource(props, frobnicate=1), plugins=pm)
    assert errors_of(exc) == ['frobnicate: unknown field "frobnicate"']


def test_unknown_field_strict_without_api_version(pm: PluginManager, props: dict[str, Any]) -> None:
    props["optimize"] = {"vmboot": {"state": "Enabled"}}
    with pytest.raises(TemplateError) as exc:
        load_template(props, plugins=pm)
    assert errors_of(exc) == [
        'optimize.vmboot: unknown field "vmboot" (AIB field names are case-sensitive; did you mean "vmBoot"?)'
    ]


def test_unknown_field_strict_with_unresolvable_api_version(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"][0]["aritfactTags"] = {"a": "b"}
    doc = {"parameters": {"api": {"type": "string"}}, "resources": [resource(props, apiVersion="[parameters('api')]")]}
    errors, _ = validate_document(doc, plugins=pm)
    assert [str(e) for e in errors] == [
        'resources[0].properties.distribute[0].aritfactTags: unknown field "aritfactTags" '
        '(AIB field names are case-sensitive; did you mean "artifactTags"?)'
    ]
    # Passing the parameter makes it an older API version: the same field is then only a warning.
    errors, warnings = validate_document(doc, plugins=pm, params={"api": "2020-02-14"})
    assert errors == []
    assert any("aritfactTags" in str(w) and w.severity == "warning" for w in warnings)


def test_old_api_version_turns_unknown_fields_into_warnings(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"][0]["aritfactTags"] = {"a": "b"}
    props["someOldField"] = True
    loaded = load_template(resource(props, apiVersion="2019-05-01-preview"), plugins=pm)
    texts = [str(w) for w in loaded.warnings]
    assert any(t.startswith("properties.distribute[0].aritfactTags: warning: unknown field") for t in texts)
    assert any(t.startswith('properties.someOldField: warning: unknown field "someOldField"') for t in texts)
    assert loaded.properties.distribute[0].artifact_tags is None


def test_field_names_are_case_sensitive_and_camel_case_only(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"][0]["run_output_name"] = props["distribute"][0].pop("runOutputName")
    props["BuildTimeoutInMinutes"] = 60
    with pytest.raises(TemplateError) as exc:
        load_template(props, plugins=pm)
    text = errors_of(exc)
    assert 'distribute[0].runOutputName: missing required field "runOutputName"' in text
    assert any(t.startswith("BuildTimeoutInMinutes: unknown field") and '"buildTimeoutInMinutes"' in t for t in text)
    assert any(t.startswith("distribute[0].run_output_name: unknown field") for t in text)


def test_identity_warning_only_for_resources(pm: PluginManager, props: dict[str, Any]) -> None:
    loaded = load_template(resource(props, apiVersion="2022-07-01"), plugins=pm)
    assert [str(w) for w in loaded.warnings] == [
        "identity: warning: identity is required by API version 2022-07-01 (local builds do not use it)"
    ]
    assert load_template(props, plugins=pm).warnings == []


def test_arm_deployment_with_several_templates(pm: PluginManager, props: dict[str, Any]) -> None:
    other = json.loads(json.dumps(props))
    other["distribute"][0]["runOutputName"] = "second"
    doc = {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "parameters": {"secondName": {"type": "string", "defaultValue": "two"}},
        "resources": [
            {"type": "Microsoft.Compute/galleries", "name": "g", "properties": {}},
            resource(props, name="one"),
            resource(other, name="[parameters('secondName')]"),
        ],
    }
    found = find_image_templates(doc)
    assert [(p, n) for p, n, _ in found] == [
        ("resources[1].properties", "one"),
        ("resources[2].properties", "[parameters('secondName')]"),
    ]
    with pytest.raises(UsageError, match=r"2 image templates \(one, two\).*--resource"):
        load_template(doc, plugins=pm)
    loaded = load_template(doc, plugins=pm, resource="two")
    assert loaded.name == "two" and loaded.path_prefix == "resources[2].properties"
    assert loaded.properties.distribute[0].run_output_name == "second"
    with pytest.raises(UsageError, match="no image template named 'three'"):
        load_template(doc, plugins=pm, resource="three")


def test_errors_of_every_template_in_a_deployment(pm: PluginManager, props: dict[str, Any]) -> None:
    bad = json.loads(json.dumps(props))
    bad["customize"][0]["scriptUri"] = "https://example.invalid/x.sh"
    doc = {"resources": [resource(props, name="ok"), resource(bad, name="bad"), resource({**props, "distribute": []})]}
    errors, _ = validate_document(doc, plugins=pm)
    assert [str(e) for e in errors] == [
        "resources[1].properties.customize[0].inline: set only one of scriptUri and inline, not both "
        "(NoCustomizerScript)",
        "resources[2].properties.distribute: distribute must list at least one distribution target",
    ]


def test_no_template_found(pm: PluginManager) -> None:
    with pytest.raises(TemplateError, match="no image template found"):
        load_template({"resources": [{"type": "Microsoft.Compute/disks", "properties": {}}]}, plugins=pm)
    errors, _ = validate_document([1, 2], plugins=pm)
    assert "no image template found" in str(errors[0])


def test_all_issues_reported_together(pm: PluginManager, props: dict[str, Any]) -> None:
    props["buildTimeoutInMinutes"] = 3
    props["customize"].append({"type": "File", "sourceUri": "https://x.invalid/a"})
    props["distribute"].append({"type": "VHD", "runOutputName": "bad name!"})
    props["vmProfile"] = {"osDiskSizeGB": -1}
    with pytest.raises(TemplateError) as exc:
        load_template(props, plugins=pm)
    paths = [i.path for i in exc.value.issues]
    assert sorted(paths) == sorted(
        ["buildTimeoutInMinutes", "customize[1].destination", "distribute[1].runOutputName", "vmProfile.osDiskSizeGB"]
    )
    assert "Traceback" not in str(exc.value)


def test_profile_and_source_replacement(pm: PluginManager, props: dict[str, Any]) -> None:
    props["source"] = {
        "type": "SharedImageVersion",
        "imageVersionId": "/subscriptions/1234/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/d"
        "/versions/1.0.0",
    }
    props["distribute"] = [
        {
            "type": "ManagedImage",
            "runOutputName": "mi",
            "location": "westus2",
            "imageId": "/subscriptions/1234/resourceGroups/rg/providers/Microsoft.Compute/images/web",
        }
    ]
    local = load_template(props, plugins=pm, profile="local")
    assert local.raw_properties["source"]["imageVersionId"].startswith("/subscriptions/local/resourceGroups/rg/")
    assert local.properties.distribute[0].image_id.startswith("/subscriptions/local/")  # type: ignore[attr-defined]
    plain = load_template(props, plugins=pm)
    assert plain.raw_properties["source"]["imageVersionId"].startswith("/subscriptions/1234/")
    assert plain.digest != local.digest
    replaced = load_template(props, plugins=pm, source={"type": "PlatformImage", "publisher": "aib-sdk"})
    assert isinstance(replaced.properties.source, PlatformImageSource)
    assert replaced.raw_properties["source"] == {"type": "PlatformImage", "publisher": "aib-sdk"}


def test_digest_is_stable_and_content_based(pm: PluginManager, props: dict[str, Any]) -> None:
    first = load_template(props, plugins=pm).digest
    reordered = dict(reversed(list(props.items())))
    assert load_template(reordered, plugins=pm).digest == first
    assert len(first) == 64
    props["customize"][0]["inline"] = ["echo changed"]
    assert load_template(props, plugins=pm).digest != first


def test_read_json_file_errors(tmp_path: Path) -> None:
    good = tmp_path / "t.json"
    good.write_text('\ufeff{"a": 1}', encoding="utf-8")
    assert read_json_file(good) == {"a": 1}
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n  "b": }\n')
    with pytest.raises(TemplateError) as exc:
        read_json_file(bad)
    assert str(exc.value).startswith("invalid JSON at line 3, column 8")
    with pytest.raises(UsageError, match="cannot read"):
        read_json_file(tmp_path / "missing.json")


def test_list_outputs_hold_templates(pm: PluginManager, props: dict[str, Any]) -> None:
    items = [resource(props, name="a"), resource(props, name="b")]
    assert [p for p, _, _ in find_image_templates(items)] == ["[0].properties", "[1].properties"]
    assert [p for p, _, _ in find_image_templates({"value": items})] == [
        "value[0].properties",
        "value[1].properties",
    ]
    assert load_template({"value": items}, plugins=pm, resource="b").path_prefix == "value[1].properties"


def test_nested_deployment(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"][0]["runOutputName"] = "[parameters('out')]"
    inner = {"parameters": {"out": {"type": "string", "defaultValue": "inner"}}, "resources": [resource(props)]}
    doc = {"resources": [{"type": "Microsoft.Resources/deployments", "name": "d", "properties": {"template": inner}}]}
    loaded = load_template(doc, plugins=pm)
    assert loaded.path_prefix == "resources[0].properties.template.resources[0].properties"
    assert loaded.properties.distribute[0].run_output_name == "inner"
