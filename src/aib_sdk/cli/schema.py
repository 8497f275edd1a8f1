"""``aib schema``: the JSON Schema of templates for the installed providers, built once per plugin catalogue."""

from __future__ import annotations

import argparse
import json

from aib_sdk.cli.invocation import plugins_of
from aib_sdk.cli.output import out


def cmd_schema(args: argparse.Namespace) -> int:
    from aib_sdk.plugins import catalog as plugin_catalog

    pm = plugins_of(args)
    current = pm.catalog()  # built once per installation: a current catalogue may already hold the schema
    text = plugin_catalog.load_schema(current) if current is not None else None
    if text is None:
        from aib_sdk.models.schema import template_json_schema

        text = json.dumps(template_json_schema(pm), indent=2)
        if current is not None:
            plugin_catalog.save_schema(current, text)
    out(text)
    return 0
