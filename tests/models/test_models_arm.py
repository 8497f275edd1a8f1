"""ARM expressions and <placeholders>: evaluated where possible, reported (not refused) where not."""

from __future__ import annotations

from typing import Any

import pytest

from aib_sdk.errors import TemplateError
from aib_sdk.models.arm import ArmContext, Opaque
from aib_sdk.models.loader import Unresolved, load_template
from aib_sdk.plugins.manager import PluginManager


def deployment(
    props: dict[str, Any], parameters: dict[str, Any], variables: dict[str, Any] | None = None, **envelope: Any
) -> dict[str, Any]:
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "parameters": parameters,
        "variables": variables or {},
        "resources": [
            {
                "type": "Microsoft.VirtualMachineImages/imageTemplates",
                "name": "t",
                "identity": {},
                **envelope,
                "properties": props,
            }
        ],
    }


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("[parameters('Name')]", "web"),
        ("[parameters('NAME')]", "web"),
        ("[concat('a-', parameters('name'), '-', variables('suffix'))]", "a-web-v1"),
        ("[format('{0}/{1}', parameters('name'), 3)]", "web/3"),
        ("[toLower('ABC')]", "abc"),
        ("[toUpper(parameters('name'))]", "WEB"),
        ("[replace('a.b.c', '.', '-')]", "a-b-c"),
        ("[string(parameters('count'))]", "3"),
        ("[parameters('count')]", 3),
        ("[variables('nested').list[1]]", "y"),
        ("[variables('fromParam')]", "web-x"),
        ("['it''s']", "it's"),
        ("[[literal]", "[literal]"),
        ("[if(equals(parameters('count'), 3), 'three', 'other')]", "three"),
        ("plain [text]", "plain [text]"),
        ("[uri('https://h.example/a/b.json', 'c.sh')]", "https://h.example/a/c.sh"),
        ("[uriComponent('a b/c')]", "a%20b%2Fc"),
    ],
)
def test_expressions(expr: str, expected: Any) -> None:
    ctx = ArmContext(
        {
            "parameters": {"name": {"type": "string"}, "count": {"type": "int", "defaultValue": 3}},
            "variables": {
                "suffix": "v1",
                "nested": {"list": ["x", "y"]},
                "fromParam": "[concat(parameters('name'), '-x')]",
            },
        },
        {"name": "web"},
    )
    assert ctx.evaluate_string(expr) == expected


def test_opaque_expressions_are_kept_and_explained() -> None:
    ctx = ArmContext({"parameters": {"p": {"type": "string"}}})
    text = "[concat(resourceGroup().id, '/', parameters('p'))]"
    assert ctx.evaluate_string(text, path="x") == text
    ((path, kept, why),) = ctx.opaque
    assert (path, kept) == ("x", text)
    assert why.functions == {"resourceGroup"} and why.missing == {"p"}
    with pytest.raises(Opaque):
        ctx.evaluate_string("[guid('a')]", strict=True)


def test_caller_params_win_and_default_values_apply(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"][0]["runOutputName"] = "[parameters('runOutputName')]"
    props["buildTimeoutInMinutes"] = "[parameters('timeout')]"
    doc = deployment(
        props,
        {"runOutputName": {"type": "string", "defaultValue": "dflt"}, "timeout": {"type": "int", "defaultValue": 60}},
    )
    loaded = load_template(doc, plugins=pm)
    assert loaded.properties.distribute[0].run_output_name == "dflt"
    assert loaded.properties.build_timeout_in_minutes == 60
    loaded = load_template(doc, plugins=pm, params={"RUNOUTPUTNAME": "given", "timeout": "120"})
    assert loaded.properties.distribute[0].run_output_name == "given"
    assert loaded.properties.build_timeout_in_minutes == 120
    assert loaded.raw_properties["buildTimeoutInMinutes"] == 120
    assert loaded.unresolved == []


def test_variables_and_nested_arm(pm: PluginManager, props: dict[str, Any]) -> None:
    props["customize"] = "[variables('steps')]"
    variables = {
        "greeting": "[concat('echo ', parameters('who'))]",
        "steps": [
            {"type": "Shell", "name": "[concat('say-', parameters('who'))]", "inline": ["[variables('greeting')]"]}
        ],
    }
    loaded = load_template(deployment(props, {"who": {"type": "string", "defaultValue": "bob"}}, variables), plugins=pm)
    step = loaded.properties.customize[0]
    assert (step.name, step.inline) == ("say-bob", ["echo bob"])


def test_unfilled_arm_parameter_is_a_warning_not_an_error(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"][0]["runOutputName"] = "[parameters('runOutputName')]"
    props["buildTimeoutInMinutes"] = "[parameters('timeout')]"
    doc = deployment(
        props,
        {"runOutputName": {"type": "string"}, "timeout": {"type": "int"}},
        name="[parameters('name')]",
        location="[resourceGroup().location]",
    )
    loaded = load_template(doc, plugins=pm)
    assert loaded.name is None
    by_path = {u.path: u for u in loaded.unresolved}
    assert by_path["resources[0].properties.distribute[0].runOutputName"] == Unresolved(
        "resources[0].properties.distribute[0].runOutputName",
        "[parameters('runOutputName')]",
        ["runOutputName"],
        "placeholder",
    )
    assert by_path["resources[0].location"].kind == "expression"
    assert by_path["resources[0].location"].names == ["resourceGroup"]
    warnings = [str(w) for w in loaded.warnings]
    assert (
        "resources[0].properties.buildTimeoutInMinutes: warning: unfilled parameter timeout "
        "(pass --param timeout=VALUE)"
    ) in warnings
    assert any(
        w == "resources[0].location: warning: ARM expression [resourceGroup().location] cannot be evaluated locally "
        "(needs Azure: resourceGroup())"
        for w in warnings
    )
    used = {u.path for u in loaded.unresolved_used()}
    assert used == {
        "resources[0].properties.distribute[0].runOutputName",
        "resources[0].properties.buildTimeoutInMinutes",
    }


def test_opaque_values_in_typed_fields(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"] = [
        {
            "type": "SharedImage",
            "runOutputName": "<out>",
            "galleryImageId": "[resourceId('x', 'y')]",
            "excludeFromLatest": "[parameters('exclude')]",
            "targetRegions": [{"name": "<region>", "replicaCount": "<replicas>", "storageAccountType": "<sku>"}],
        }
    ]
    props["vmProfile"] = {"osDiskSizeGB": "[parameters('disk')]"}
    loaded = load_template(deployment(props, {"exclude": {"type": "bool"}, "disk": {"type": "int"}}), plugins=pm)
    names = sorted(n for u in loaded.unresolved for n in u.names)
    assert names == ["disk", "exclude", "out", "region", "replicas", "resourceId", "sku"]
    assert loaded.raw_properties["distribute"][0]["runOutputName"] == "<out>"


def test_placeholders(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"][0]["runOutputName"] = "<runOutputName>"
    props["distribute"][0]["artifactTags"] = {"<tagName>": "x", "literal": "{braces} stay"}
    props["customize"][0]["inline"] = ["echo <greeting> {not-a-placeholder}"]
    props["stagingResourceGroup"] = "/subscriptions/<subscriptionID>/resourceGroups/<rg>"
    loaded = load_template(props, plugins=pm)
    assert {(u.path, tuple(u.names)) for u in loaded.unresolved} == {
        ("distribute[0].runOutputName", ("runOutputName",)),
        ('distribute[0].artifactTags["<tagName>"]', ("tagName",)),
        ("customize[0].inline[0]", ("greeting",)),
        ("stagingResourceGroup", ("subscriptionID", "rg")),
    }
    assert all(u.kind == "placeholder" for u in loaded.unresolved)
    assert len(loaded.warnings) == 4
    assert {u.path for u in loaded.unresolved_used()} == {
        "distribute[0].runOutputName",
        'distribute[0].artifactTags["<tagName>"]',
        "customize[0].inline[0]",
    }
    filled = load_template(
        props,
        plugins=pm,
        params={"runOutputName": "web", "greeting": "hi", "tagName": "k", "subscriptionID": "s", "rg": "r"},
    )
    assert filled.unresolved == [] and filled.warnings == []
    assert filled.properties.distribute[0].run_output_name == "web"
    assert filled.properties.distribute[0].artifact_tags == {"k": "x", "literal": "{braces} stay"}
    assert filled.properties.customize[0].inline == ["echo hi {not-a-placeholder}"]


def test_placeholder_does_not_hide_other_errors(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"][0]["runOutputName"] = "<out>"
    props["distribute"].append({"type": "VHD", "runOutputName": "bad name"})
    with pytest.raises(TemplateError) as exc:
        load_template(props, plugins=pm)
    assert [i.path for i in exc.value.issues] == ["distribute[1].runOutputName"]
    assert any(w.path == "distribute[0].runOutputName" for w in exc.value.warnings)


def test_bad_expression_is_an_error(pm: PluginManager, props: dict[str, Any]) -> None:
    props["customize"][0]["name"] = "[concat('a', ]"
    props["customize"][0]["inline"] = ["[variables('missing')]"]
    with pytest.raises(TemplateError) as exc:
        load_template(deployment(props, {}), plugins=pm)
    paths = [i.path for i in exc.value.issues]
    assert paths == ["resources[0].properties.customize[0].name", "resources[0].properties.customize[0].inline[0]"]
    assert all("cannot evaluate ARM expression" in i.message for i in exc.value.issues)


def test_brackets_outside_arm_are_text(pm: PluginManager, props: dict[str, Any]) -> None:
    props["customize"][0]["inline"] = ["[ -f /etc/hostname ]", "[ok]", "[[x]"]
    loaded = load_template(props, plugins=pm)
    assert loaded.properties.customize[0].inline == ["[ -f /etc/hostname ]", "[ok]", "[x]"]
    assert loaded.unresolved == [] and loaded.warnings == []


def test_call_outside_arm_uses_caller_params(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"][0]["runOutputName"] = "[parameters('out')]"
    loaded = load_template(props, plugins=pm)
    assert [(u.path, u.names, u.kind) for u in loaded.unresolved] == [
        ("distribute[0].runOutputName", ["out"], "placeholder")
    ]
    assert load_template(props, plugins=pm, params={"out": "o"}).properties.distribute[0].run_output_name == "o"


def test_default_value_needing_azure_stays_opaque(pm: PluginManager, props: dict[str, Any]) -> None:
    props["distribute"] = [
        {"type": "ManagedImage", "runOutputName": "mi", "imageId": "/x", "location": "[parameters('loc')]"}
    ]
    doc = deployment(props, {"loc": {"type": "string", "defaultValue": "[resourceGroup().location]"}})
    loaded = load_template(doc, plugins=pm)
    (item,) = loaded.unresolved
    assert (item.path, item.text, item.kind, item.names) == (
        "resources[0].properties.distribute[0].location",
        "[parameters('loc')]",
        "expression",
        ["resourceGroup"],
    )
    assert load_template(doc, plugins=pm, params={"loc": "westus"}).unresolved == []


def test_source_override_is_filled_too(pm: PluginManager, props: dict[str, Any]) -> None:
    source = {"type": "ManagedImage", "imageId": "/subscriptions/<sub>/resourceGroups/rg/providers/x/images/i"}
    loaded = load_template(props, plugins=pm, source=source)
    assert [u.path for u in loaded.unresolved_used()] == ["source.imageId"]
    filled = load_template(props, plugins=pm, source=source, params={"sub": "local"})
    assert filled.properties.source.image_id == "/subscriptions/local/resourceGroups/rg/providers/x/images/i"
