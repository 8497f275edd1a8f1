"""The JSON Schema of a whole image template (envelope and properties) with the installed providers' types."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, create_model

from aib_sdk.models.template import TemplateResource, build_properties_model

if TYPE_CHECKING:
    from aib_sdk.plugins.manager import PluginManager

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def template_json_schema(plugins: PluginManager) -> dict[str, Any]:
    """A JSON Schema accepting an image template resource or a bare ``properties`` object."""
    properties_model = build_properties_model(plugins.spec_registry)
    resource_model = create_model(
        "ImageTemplate",
        __base__=TemplateResource,
        properties=(properties_model, Field(...)),
    )
    schema = resource_model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = schema.pop("$defs", {})
    defs["ImageTemplate"] = schema
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "AIB image template (aib-sdk)",
        "anyOf": [{"$ref": "#/$defs/ImageTemplate"}, {"$ref": f"#/$defs/{properties_model.__name__}"}],
        "$defs": defs,
    }
