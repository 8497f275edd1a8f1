"""Credentials only to configured endpoints: a template's ``endpointUrl`` is refused at plan time unless the operator
configured it (``AWS_ENDPOINT_URL(_S3)``, ``[trust] endpoints``) or it is AWS's own S3 endpoint.

Attack: a template whose ``S3Image`` source and target name ``endpointUrl`` = a recording proxy in front of moto (the
host a template author controls). Before: SigV4-signed requests carrying the operator's access key id and session
reached it. After: ``aib build`` exits 1 with one line naming the host and the setting; the proxy saw nothing. The
legitimate use (the operator configures that endpoint) still downloads through it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from aib_provider_s3_vhd.source import S3ImageResolver
from aib_provider_s3_vhd.specs import S3ImageSource
from aib_sdk.builder.plan import make_plan
from aib_sdk.cli import main
from aib_sdk.config import Config
from aib_sdk.errors import UsageError
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager

pytestmark = pytest.mark.anyio


def _template(folder: Path, uri: str, digest: str, endpoint: str, bucket: str) -> Path:
    doc = {
        "source": {"type": "S3Image", "uri": uri, "sha256Checksum": digest, "endpointUrl": endpoint},
        "distribute": [
            {
                "type": "S3Image",
                "runOutputName": "s3",
                "key": "out/disk.qcow2",
                "regions": [{"bucket": bucket, "region": "us-east-1", "endpointUrl": endpoint}],
            }
        ],
    }
    path = folder / "t.json"
    path.write_text(json.dumps(doc))
    return path


async def _object(s3lab) -> tuple[str, str, str]:
    bucket = await s3lab.bucket("us-east-1")
    body = b"\0" * 65536
    async with s3lab.client() as s3:
        await s3.put_object(Bucket=bucket, Key="base.raw", Body=body)
    return bucket, f"s3://{bucket}/base.raw", hashlib.sha256(body).hexdigest()


async def test_unconfigured_endpoint_gets_no_request(s3lab, proxy_factory, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AIB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.delenv("AIB_CONFIG", raising=False)
    bucket, uri, digest = await _object(s3lab)
    async with proxy_factory(s3lab.url) as proxy:
        template = _template(tmp_path, uri, digest, proxy.url, bucket)
        port = proxy.url.rsplit(":", 1)[1]
        code = await _to_thread(lambda: main(["build", str(template), "--progress", "none"]))
        err = capsys.readouterr().err
        assert code == 1, err
        assert f"refusing to send credentials to http://127.0.0.1:{port}" in err and "AWS_ENDPOINT_URL_S3" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        # The target's endpoint alone is refused too (the source given by the operator with --source is not).
        source = json.dumps({"type": "S3Image", "uri": uri, "sha256Checksum": digest})
        args = ["build", str(template), "--progress", "none", "--source", source]
        assert await _to_thread(lambda: main(args)) == 1
        assert "S3Image target 's3'" in capsys.readouterr().err
        assert proxy.seen == []  # not one request reached the template's endpoint


async def test_configured_endpoint_still_works(s3lab, proxy_factory, make_ctx, tmp_path: Path, monkeypatch) -> None:
    bucket, uri, digest = await _object(s3lab)
    async with proxy_factory(s3lab.url) as proxy:
        template = _template(tmp_path, uri, digest, proxy.url, bucket)
        plugins = PluginManager()
        for env in (
            {"AWS_ENDPOINT_URL_S3": proxy.url},
            {"AWS_ENDPOINT_URL": proxy.url},
            {"AIB_TRUST_ENDPOINTS": proxy.url},
        ):
            config = Config({}, {"HOME": str(tmp_path), **env})
            await make_plan(template, BuildOptions(config=config, plugins=plugins))
        config = Config({"trust": {"endpoints": [proxy.url]}}, {"HOME": str(tmp_path)})
        plan = await make_plan(template, BuildOptions(config=config, plugins=plugins))
        image = await S3ImageResolver().resolve(plan.source_spec, make_ctx())
        assert image.sha256 == digest and any(s.method == "GET" for s in proxy.seen)


def test_public_endpoints_and_plain_http() -> None:
    config = Config({}, {})
    ok = {"type": "S3Image", "uri": "s3://bucket-a/k.raw", "endpointUrl": "https://s3.eu-west-1.amazonaws.com"}
    assert S3ImageResolver.claims(S3ImageSource.model_validate(ok), config)
    for url, why in [
        ("http://s3.eu-west-1.amazonaws.com", "plain http"),
        ("https://s3.amazonaws.com.attacker.example", "neither the provider's public endpoint"),
        ("https://minio.internal:9000", "neither the provider's public endpoint"),
    ]:
        spec = S3ImageSource.model_validate({**ok, "endpointUrl": url})
        with pytest.raises(UsageError, match=why):
            S3ImageResolver.claims(spec, config)
    # Configured as plain http by the operator: allowed.
    spec = S3ImageSource.model_validate({**ok, "endpointUrl": "http://minio.internal:9000"})
    assert S3ImageResolver.claims(spec, Config({}, {"AWS_ENDPOINT_URL_S3": "http://minio.internal:9000/"}))


async def _to_thread(func):
    import anyio.to_thread

    return await anyio.to_thread.run_sync(func)
