"""The typed provider bases: spec model and type name from the type argument, defaults for optional members,
routing by ``accepts``, and a plugin written with them building through the real Builder (on the fakes)."""

from __future__ import annotations

from typing import Literal

import pytest

from aib_sdk.artifacts import Artifact, DiskImage, RunOutput
from aib_sdk.bases import ANY_OS, BuildHostBase, CustomizerBase, DistributorBase, SourceBase
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.context import RunContext, StepContext
from aib_sdk.models.specs import AibModel, DistributorSpec, StepSpec
from aib_sdk.options import BuildOptions
from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.protocols import Customizer, Distributor, Source
from aib_sdk.testing.fakes import fake_template

pytestmark = pytest.mark.anyio


class GreetSpec(StepSpec):
    type: Literal["Greet"]
    greeting: str = "hello"


class Greet(CustomizerBase[GreetSpec]):
    async def run(self, spec: GreetSpec, step: StepContext) -> None:
        await step.communicator.run(f"echo {spec.greeting}", on_output=step.on_output)


class BucketSpec(DistributorSpec):
    type: Literal["Bucket"]
    uri: str


published: list[tuple[str, str]] = []


class Bucket(DistributorBase[BucketSpec]):
    @classmethod
    def accepts(cls, spec: BucketSpec, config: Config) -> bool:
        return spec.uri.startswith("bucket://")

    async def publish(self, artifact: Artifact, spec: BucketSpec, ctx: RunContext) -> RunOutput:
        published.append((spec.run_output_name, spec.uri))
        return RunOutput(spec.run_output_name, artifact_id=spec.uri, artifact_uri=spec.uri)


class SeedSpec(AibModel):
    type: Literal["Seed"]


class Seed(SourceBase[SeedSpec]):
    async def resolve(self, spec: SeedSpec, ctx: RunContext) -> DiskImage:
        raise NotImplementedError


class Plugin:
    @hookimpl
    def aib_register_customizers(self) -> list[type[Customizer]]:
        return [Greet]

    @hookimpl
    def aib_register_distributors(self) -> list[type[Distributor]]:
        return [Bucket]

    @hookimpl
    def aib_register_sources(self) -> list[type[Source]]:
        return [Seed]


def test_the_type_argument_gives_model_and_name_and_members_have_defaults() -> None:
    assert (Greet.spec_model, Greet.type_name) == (GreetSpec, "Greet")
    assert (Greet.validator_model, Greet.os_types, Greet.hidden) == (None, ANY_OS, False)
    assert (Bucket.spec_model, Bucket.type_name, Seed.type_name) == (BucketSpec, "Bucket", "Seed")
    assert Seed.explain_unclaimed(SeedSpec(type="Seed"), Config({})) is None
    config = Config({})
    assert Bucket.claims(BucketSpec(type="Bucket", uri="bucket://b/k", runOutputName="o"), config)
    assert not Bucket.claims(BucketSpec(type="Bucket", uri="s3://b/k", runOutputName="o"), config)
    assert not Bucket.claims(SeedSpec(type="Seed"), config)  # another model is never claimed
    assert Seed.claims(SeedSpec(type="Seed"), config)


def test_a_build_host_base_is_available_by_default() -> None:
    class Host(BuildHostBase):
        name = "mine"

        def start(self, image, vm, ctx):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    assert Host.available(Config({}))


def test_the_bases_refuse_a_missing_implementation() -> None:
    class Lazy(DistributorBase[BucketSpec]):
        pass

    with pytest.raises(TypeError, match="publish"):
        Lazy()  # type: ignore[abstract]


async def test_a_plugin_written_with_the_bases_builds(aib_plugins: PluginManager, aib_home: Config) -> None:
    published.clear()
    aib_plugins.register(Plugin(), name="greeter")
    template = fake_template(steps=0, targets=0)
    template["customize"] = [{"type": "Greet", "name": "hi", "greeting": "bonjour"}]
    template["distribute"] = [{"type": "Bucket", "uri": "bucket://b/image", "runOutputName": "img"}]
    options = BuildOptions(config=aib_home, plugins=aib_plugins, build_host="fake")
    result = await Builder(template, options=options).run()
    assert result.last_run_status.run_state == "Succeeded", result.last_run_status.message
    assert published == [("img", "bucket://b/image")]
    assert result.run_outputs["img"].artifact_id == "bucket://b/image"
    assert aib_plugins.registry.types_by_plugin()["greeter"] == [
        "source:Seed",
        "customizer:Greet",
        "distributor:Bucket",
    ]
