"""``python fake_aib.py ARGS…``: the real ``aib`` command line with the fake providers in place of the installed
ones, for Temporal tests whose workers need no VM: provider ``fake`` (``FakeImage``, build host ``fake``,
``FakeStep``, ``FakeTarget``) and provider ``fake-extra`` (step ``ExtraStep``, target ``FlakyTarget``), so a
worker polls two task queues (``Q@fake`` and ``Q@fake+fake-extra``). :func:`fake_plugins` gives a submitter the
same providers."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any, Literal

from aib_sdk.artifacts import Artifact, RunOutput
from aib_sdk.bases import DistributorBase
from aib_sdk.context import RunContext
from aib_sdk.errors import DistributeError
from aib_sdk.models.specs import DistributorSpec
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


class FlakyTargetSpec(DistributorSpec):
    """Target type ``FlakyTarget``: its first ``failures`` publishes in this process fail."""

    type: Literal["FlakyTarget"]
    failures: int = 1


class FlakyTarget(DistributorBase[FlakyTargetSpec]):
    tries: Counter[tuple[str, str]] = Counter()

    async def publish(self, artifact: Artifact, spec: FlakyTargetSpec, ctx: RunContext) -> RunOutput:
        key = (ctx.run_id, spec.run_output_name)
        self.tries[key] += 1
        if self.tries[key] <= spec.failures:
            raise DistributeError(f"{spec.run_output_name}: flaky failure {self.tries[key]} of {spec.failures}")
        uri = f"flaky://{spec.run_output_name}/{self.tries[key]}"
        return RunOutput(run_output_name=spec.run_output_name, artifact_id=uri, artifact_uri=uri)


class ExtraPlugin:
    @hookimpl
    def aib_register_customizers(self) -> list[type[Any]]:
        return [ExtraStep]

    @hookimpl
    def aib_register_distributors(self) -> list[type[Any]]:
        return [FlakyTarget]


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
