"""``aib gallery``: create galleries and image definitions, list, show and delete what the local gallery holds."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from anyio.to_thread import run_sync

from aib_provider_local_gallery.ids import GalleryImageRef, GalleryRef, check_name, parse_local_id
from aib_provider_local_gallery.manifest import DefinitionRecord
from aib_provider_local_gallery.settings import GallerySettings
from aib_provider_local_gallery.store import GalleryStore, NotFoundError
from aib_provider_local_gallery.versioning import latest_of
from aib_sdk.config import Config
from aib_sdk.errors import AibError

Command = Callable[[argparse.Namespace], Awaitable[int]]


def _store(args: argparse.Namespace) -> GalleryStore:
    config = Config.load(getattr(args, "config", None))
    return GalleryStore(GallerySettings.from_config(config))


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _wrap(command: Command) -> Command:
    """Turn SDK errors into a message on stderr and exit code 1."""

    async def run(args: argparse.Namespace) -> int:
        try:
            return await command(args)
        except AibError as exc:
            print(f"aib gallery: error: {exc}", file=sys.stderr)
            return 1

    return run


def _find_gallery(store: GalleryStore, gallery: str, resource_group: str | None) -> GalleryRef:
    """The gallery named ``gallery``; its resource group may be left out when the name is unique."""
    check_name("gallery", gallery)
    if resource_group:
        return GalleryRef(check_name("resource group", resource_group), gallery)
    found = [g for g in store.galleries() if g.name.lower() == gallery.lower()]
    if len(found) != 1:
        detail = "does not exist" if not found else "exists in several resource groups"
        raise NotFoundError(f"gallery {gallery!r} {detail}; pass --resource-group")
    return GalleryRef(found[0].resource_group, found[0].name)


async def cmd_create(args: argparse.Namespace) -> int:
    store = _store(args)
    ref = GalleryRef(check_name("resource group", args.resource_group), check_name("gallery", args.gallery))
    record = await run_sync(store.create_gallery, ref, args.location)
    _print(args, record.model_dump(by_alias=True), record.id)
    return 0


async def cmd_definition_create(args: argparse.Namespace) -> int:
    store = _store(args)

    def create() -> DefinitionRecord:
        gallery = _find_gallery(store, args.gallery, args.resource_group)
        ref = GalleryImageRef(gallery.resource_group, gallery.gallery, check_name("image definition", args.definition))
        location = args.location or store.get_gallery(gallery).location
        record = DefinitionRecord(
            id=ref.definition_id,
            name=ref.definition,
            gallery=ref.gallery,
            resource_group=ref.resource_group,
            location=location,
            publisher=args.publisher,
            offer=args.offer,
            sku=args.sku,
            os_type=args.os_type,
            os_state=args.os_state,
            hyper_v_generation=args.hyper_v_generation,
        )
        return store.create_definition(record)

    record = await run_sync(create)
    _print(args, record.model_dump(by_alias=True), record.id)
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)

    def collect() -> dict[str, Any]:
        galleries = []
        for gallery in store.galleries():
            if args.resource_group and gallery.resource_group.lower() != args.resource_group.lower():
                continue
            definitions = []
            for d in store.definitions(GalleryRef(gallery.resource_group, gallery.name)):
                ref = GalleryImageRef(d.resource_group, d.gallery, d.name)
                versions = store.versions(ref)
                definitions.append(
                    {
                        **d.model_dump(by_alias=True),
                        "versions": [v.name for v in versions],
                        "latest": latest_of((v.name, v.exclude_from_latest) for v in versions),
                    }
                )
            galleries.append({**gallery.model_dump(by_alias=True), "definitions": definitions})
        images = [
            m.model_dump(by_alias=True)
            for m in store.managed_images()
            if not args.resource_group or m.resource_group.lower() == args.resource_group.lower()
        ]
        return {"root": str(store.root), "galleries": galleries, "managedImages": images}

    data = await run_sync(collect)
    lines = [f"gallery root: {data['root']}"]
    for gallery in data["galleries"]:
        lines.append(f"{gallery['id']}  ({gallery['location']})")
        for d in gallery["definitions"]:
            lines.append(
                f"  {d['name']}  {d['publisher']}/{d['offer']}/{d['sku']}  {d['osType']} "
                f"{d['hyperVGeneration']}  versions: {len(d['versions'])}  latest: {d['latest'] or '-'}"
            )
    for image in data["managedImages"]:
        lines.append(f"{image['id']}  ({image['location']})")
    _print(args, data, "\n".join(lines))
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    store = _store(args)

    def lookup() -> dict[str, Any]:
        ref = parse_local_id(args.id)
        if isinstance(ref, GalleryRef):
            return store.get_gallery(ref).model_dump(by_alias=True)
        if isinstance(ref, GalleryImageRef) and not ref.version:
            return store.get_definition(ref).model_dump(by_alias=True)
        return store.get_image(ref).model_dump(by_alias=True)

    data = await run_sync(lookup)
    print(json.dumps(data, indent=2))
    return 0


async def cmd_delete(args: argparse.Namespace) -> int:
    store = _store(args)
    ref = parse_local_id(args.id)
    await run_sync(store.delete, ref)
    _print(args, {"deleted": args.id}, f"deleted {args.id}")
    return 0


async def cmd_versions(args: argparse.Namespace) -> int:
    store = _store(args)

    def collect() -> list[dict[str, Any]]:
        gallery = _find_gallery(store, args.gallery, args.resource_group)
        ref = GalleryImageRef(gallery.resource_group, gallery.gallery, check_name("image definition", args.definition))
        versions = store.versions(ref)
        latest = latest_of((v.name, v.exclude_from_latest) for v in versions)
        return [{**v.model_dump(by_alias=True), "isLatest": v.name == latest} for v in versions]

    rows = await run_sync(collect)
    lines = [
        f"{r['name']:<14} {'latest' if r['isLatest'] else ('excluded' if r['excludeFromLatest'] else ''):<9} "
        f"{r['createdAt']}  {','.join(x['region'] for x in r['regions'])}  {r['id']}"
        for r in rows
    ]
    _print(args, rows, "\n".join(lines) if lines else "no versions")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``aib gallery …`` to the CLI's sub-parsers."""
    gallery = subparsers.add_parser("gallery", help="manage the local image gallery")
    sub = gallery.add_subparsers(dest="gallery_command", required=True, metavar="COMMAND")

    def parser(parent: Any, name: str, help_text: str, func: Command) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_text)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=_wrap(func))
        return p

    p = parser(sub, "create", "create a gallery", cmd_create)
    p.add_argument("gallery")
    p.add_argument("--resource-group", "-g", required=True)
    p.add_argument("--location", "-l", default=None, help="the gallery's region (default: home_region)")

    definition = sub.add_parser("definition", help="manage image definitions")
    dsub = definition.add_subparsers(dest="definition_command", required=True, metavar="COMMAND")
    p = parser(dsub, "create", "create an image definition", cmd_definition_create)
    p.add_argument("gallery")
    p.add_argument("definition")
    p.add_argument("--resource-group", "-g")
    p.add_argument("--publisher", required=True)
    p.add_argument("--offer", required=True)
    p.add_argument("--sku", required=True)
    p.add_argument("--os-type", choices=["Linux", "Windows"], default="Linux")
    p.add_argument("--os-state", choices=["Generalized", "Specialized"], default="Generalized")
    p.add_argument("--hyper-v-generation", choices=["V1", "V2"], default="V1")
    p.add_argument("--location", "-l", default=None, help="the definition's region (default: the gallery's)")

    p = parser(sub, "list", "list galleries, definitions and managed images", cmd_list)
    p.add_argument("--resource-group", "-g")

    p = parser(sub, "show", "show a gallery, definition, version (or 'latest') or managed image", cmd_show)
    p.add_argument("id")

    p = parser(sub, "delete", "delete a version, managed image, or an empty definition or gallery", cmd_delete)
    p.add_argument("id")

    p = parser(sub, "versions", "list the versions of an image definition", cmd_versions)
    p.add_argument("gallery")
    p.add_argument("definition")
    p.add_argument("--resource-group", "-g")
