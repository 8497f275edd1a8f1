"""Where the image templates are in a document, and which one the caller asked for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aib_sdk.errors import Issue, TemplateError, UsageError
from aib_sdk.models.arm import ArmContext, is_expression, join_path
from aib_sdk.models.placeholders import fill_placeholders, is_unresolved


@dataclass
class Candidate:
    """One image template found in a document, with the ARM template whose parameters apply to it."""

    resource_path: str  # path of the resource object ("" at the root)
    resource: dict[str, Any]
    bare: bool  # a bare properties object
    arm_root: dict[str, Any] | None  # the ARM template whose parameters/variables apply

    @property
    def properties_prefix(self) -> str:
        return self.resource_path if self.bare else join_path(self.resource_path, "properties")


def _is_template_resource(obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    props = obj.get("properties")
    if not isinstance(props, dict) or "source" not in props:
        return False
    kind = obj.get("type")
    return not isinstance(kind, str) or is_expression(kind) or "virtualmachineimages" in kind.lower()


def candidates(doc: Any, path: str = "", arm_root: dict[str, Any] | None = None) -> list[Candidate]:
    if isinstance(doc, list):  # e.g. the output of `az image builder list`
        found: list[Candidate] = []
        for index, item in enumerate(doc):
            if _is_template_resource(item):
                found.append(Candidate(f"{path}[{index}]", item, False, arm_root))
        return found
    if not isinstance(doc, dict):
        return []
    if "source" in doc and "resources" not in doc:
        return [Candidate(path, doc, True, arm_root)]
    if "properties" in doc and isinstance(doc.get("properties"), dict) and "source" in doc["properties"]:
        return [Candidate(path, doc, False, arm_root)]
    if isinstance(doc.get("value"), list) and "resources" not in doc:  # a REST list response
        return candidates(doc["value"], join_path(path, "value"), arm_root)
    found = []
    resources = doc.get("resources")
    if isinstance(resources, list):
        root = doc
        for index, res in enumerate(resources):
            res_path = join_path(path, "resources") + f"[{index}]"
            if _is_template_resource(res):
                found.append(Candidate(res_path, res, False, root))
            elif isinstance(res, dict) and isinstance(res.get("properties"), dict):
                inner = res["properties"].get("template")
                if isinstance(inner, dict):  # a nested deployment
                    found += candidates(inner, join_path(join_path(res_path, "properties"), "template"), inner)
    return found


def find_image_templates(doc: Any) -> list[tuple[str, str | None, dict[str, Any]]]:
    """Every image template in ``doc``: (path prefix of its properties, resource name as written, the object).

    The object is the resource, or the properties object itself for the bare form (prefix ``""``).
    """
    out = []
    for cand in candidates(doc):
        name = None if cand.bare else cand.resource.get("name")
        out.append((cand.properties_prefix, name if isinstance(name, str) else None, cand.resource))
    return out


def evaluated_name(cand: Candidate, params: Mapping[str, str] | None) -> str | None:
    if cand.bare:
        return None
    raw = cand.resource.get("name")
    if not isinstance(raw, str):
        return None
    value = ArmContext(cand.arm_root, params, arm=cand.arm_root is not None).evaluate_string(raw)
    if isinstance(value, str) and params:
        value = fill_placeholders(value, params)
    return value if isinstance(value, str) and not is_unresolved(value) else None


def select(candidates: list[Candidate], resource: str | None, params: Mapping[str, str] | None) -> Candidate:
    if not candidates:
        raise TemplateError(
            [
                Issue(
                    "",
                    "no image template found: expected a properties object with 'source', a resource with "
                    "'properties.source', or an ARM deployment whose resources[] hold one",
                )
            ]
        )
    names = [evaluated_name(c, params) for c in candidates]
    shown = ", ".join(
        n or str(c.resource.get("name") or c.resource_path) for n, c in zip(names, candidates, strict=True)
    )
    if resource is None:
        if len(candidates) > 1:
            raise UsageError(
                f"this file holds {len(candidates)} image templates ({shown}); choose one with --resource NAME"
            )
        return candidates[0]
    for wanted in (resource, resource.lower()):
        for name, cand in zip(names, candidates, strict=True):
            raw = cand.resource.get("name")
            if wanted in (name, raw) or (name and wanted == name.lower()):
                return cand
    raise UsageError(f"no image template named {resource!r} in this file (found: {shown})")
