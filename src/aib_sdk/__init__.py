"""aib-sdk: build VM images from Azure VM Image Builder templates, anywhere, as an async SDK.

```python
from aib_sdk import Builder, BuildOptions
result = await Builder("template.json", options=BuildOptions(params={"runOutputName": "web"})).run()
```

Names are imported lazily so that ``import aib_sdk`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aib_sdk.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from aib_sdk.artifacts import Artifact, CommandResult, DiskImage, RunOutput
    from aib_sdk.builder import Builder
    from aib_sdk.config import Config
    from aib_sdk.errors import AibError, BuildError, TemplateError, UsageError
    from aib_sdk.options import BuildOptions
    from aib_sdk.plugins import hookimpl
    from aib_sdk.plugins.manager import PluginManager
    from aib_sdk.result import BuildResult, LastRunStatus

_EXPORTS = {
    "AibError": "aib_sdk.errors",
    "Artifact": "aib_sdk.artifacts",
    "BuildError": "aib_sdk.errors",
    "BuildOptions": "aib_sdk.options",
    "BuildResult": "aib_sdk.result",
    "Builder": "aib_sdk.builder",
    "CommandResult": "aib_sdk.artifacts",
    "Config": "aib_sdk.config",
    "DiskImage": "aib_sdk.artifacts",
    "LastRunStatus": "aib_sdk.result",
    "PluginManager": "aib_sdk.plugins.manager",
    "RunOutput": "aib_sdk.artifacts",
    "TemplateError": "aib_sdk.errors",
    "UsageError": "aib_sdk.errors",
    "hookimpl": "aib_sdk.plugins",
}

__all__ = [
    "AibError",
    "Artifact",
    "BuildError",
    "BuildOptions",
    "BuildResult",
    "Builder",
    "CommandResult",
    "Config",
    "DiskImage",
    "LastRunStatus",
    "PluginManager",
    "RunOutput",
    "TemplateError",
    "UsageError",
    "hookimpl",
]


__getattr__ = lazy_exports(__name__, _EXPORTS)
