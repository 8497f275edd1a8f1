"""Runs one Python code block from the docs (``python block_runner.py BLOCK.py``), in a subprocess of the test.

Builds use the harness's fakes: every ``PluginManager`` gets the fake plugin (build host ``fake``, which boots no VM)
plus a stand-in that resolves any ``PlatformImage`` to a tiny fake disk; the installed providers are disabled
(``AIB_DISABLE_PLUGINS``). Top-level ``await`` is allowed, as in the docs' short snippets.
A build the block runs must succeed.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from aib_sdk.artifacts import DiskImage
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.models.specs import PlatformImageSource
from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.result import BuildResult
from aib_sdk.testing.fakes import FakeImageSpec, fake_plugin


class _AnyPlatformImage:
    """``PlatformImage`` of any publisher/offer/sku, resolved like the fakes' ``FakeImage`` (no download)."""

    type_name: ClassVar[str] = "PlatformImage"
    spec_model: ClassVar[type[BaseModel]] = PlatformImageSource

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        return True

    async def resolve(self, spec: BaseModel, ctx: RunContext) -> DiskImage:
        return await _FAKES.source().resolve(FakeImageSpec(type="FakeImage"), ctx)


class _DocsPlugin:
    @hookimpl
    def aib_register_sources(self) -> list[Any]:
        return [_AnyPlatformImage]


_FAKES = fake_plugin()
_original_init = PluginManager.__init__
_original_run = Builder.run
_results: list[BuildResult] = []


def _init_with_fakes(self: PluginManager, *args: Any, **kwargs: Any) -> None:
    kwargs["plugins"] = [*kwargs.get("plugins", ()), _FAKES, _DocsPlugin()]
    _original_init(self, *args, **kwargs)


async def _recording_run(self: Builder) -> BuildResult:
    result = await _original_run(self)
    _results.append(result)
    return result


def main(path: str) -> None:
    os.environ["AIB_DISABLE_PLUGINS"] = ",".join(ep.name for ep in entry_points(group="aib_sdk"))
    PluginManager.__init__ = _init_with_fakes  # type: ignore[method-assign]
    Builder.run = _recording_run  # type: ignore[method-assign]
    source = Path(path).read_text(encoding="utf-8")
    code = compile(source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": path}
    result = eval(code, namespace)  # the block itself; a coroutine when it has top-level await
    if inspect.iscoroutine(result):
        asyncio.run(result)
    failed = [r for r in _results if r.run_state != "Succeeded"]
    if failed:
        sys.exit(f"docs block: a build ended {failed[0].run_state}: {failed[0].last_run_status.message}")
    print(f"docs block: {len(_results)} build(s) succeeded on the fakes")


if __name__ == "__main__":
    main(sys.argv[1])
