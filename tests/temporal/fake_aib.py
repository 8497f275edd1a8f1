"""``python fake_aib.py ARGS…``: the real ``aib`` command line with the fake providers in place of the installed
ones, for Temporal tests whose workers need no VM: provider ``fake`` (``FakeImage``, build host ``fake``,
``FakeStep``, ``FakeTarget``) and provider ``fake-extra`` (step ``ExtraStep``), so a worker polls two task queues
(``Q@fake`` and ``Q@fake+fake-extra``). :func:`fake_plugins` gives a submitter the same providers."""

from __future__ import annotations

import sys
from typing import Any, Literal

from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fakes import FakeStep, FakeStepSpec, fake_plugin


class ExtraStepSpec(FakeStepSpec):
    """Step type ``ExtraStep``: a ``FakeStep`` owned by provider ``fake-extra``."""

    type: Literal["ExtraStep"]  # type: ignore[assignment]


class ExtraStep(FakeStep):
    spec_model = ExtraStepSpec
    type_name = "ExtraStep"
    validator_model = ExtraStepSpec


class ExtraPlugin:
    @hookimpl
    def aib_register_customizers(self) -> list[type[Any]]:
        return [ExtraStep]


def fake_plugins() -> PluginManager:
    pm = PluginManager(entry_points=False, disabled=())
    pm.register(fake_plugin(), name="fake")
    pm.register(ExtraPlugin(), name="fake-extra")
    return pm


if __name__ == "__main__":
    from aib_sdk.cli import invocation
    from aib_sdk.cli.app import main

    invocation.new_plugin_manager = fake_plugins
    sys.exit(main(sys.argv[1:]))
