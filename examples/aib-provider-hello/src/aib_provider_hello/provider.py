"""The implementations, on aib-sdk's typed bases."""

import shlex
from pathlib import Path

from aib_provider_hello.specs import FolderSpec, MotdSpec
from aib_sdk import disks
from aib_sdk.artifacts import Artifact, RunOutput
from aib_sdk.bases import CustomizerBase, DistributorBase
from aib_sdk.context import RunContext, StepContext
from aib_sdk.distributors.files import publish_file
from aib_sdk.errors import StepError


class Motd(CustomizerBase[MotdSpec]):
    """Writes ``message`` to the guest's /etc/motd."""

    async def run(self, spec: MotdSpec, step: StepContext) -> None:
        command = f"printf '%s\\n' {shlex.quote(spec.message)} | sudo tee /etc/motd"
        result = await step.communicator.run(command, on_output=step.on_output)
        if not result.ok:
            raise StepError(step.name, "writing /etc/motd failed", exit_code=result.exit_code, log_tail=step.tail)


class Folder(DistributorBase[FolderSpec]):
    """Publishes the image as ``<path>/<runOutputName>.qcow2``, atomically."""

    async def publish(self, artifact: Artifact, spec: FolderSpec, ctx: RunContext) -> RunOutput:
        disk = await disks.converted(artifact, "qcow2", ctx, target_name=spec.run_output_name)
        destination = Path(spec.path) / f"{spec.run_output_name}.qcow2"
        await publish_file(disk, destination, ctx, target=spec.run_output_name)
        return RunOutput(spec.run_output_name, artifact_uri=destination.as_uri())
