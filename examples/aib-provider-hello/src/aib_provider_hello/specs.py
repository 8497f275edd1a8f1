"""The template types (imported alone by ``aib validate``: keep it light)."""

from typing import Literal

from aib_sdk.models.specs import DistributorSpec, StepSpec


class MotdSpec(StepSpec):
    type: Literal["Motd"]
    message: str


class FolderSpec(DistributorSpec):
    type: Literal["Folder"]
    path: str
