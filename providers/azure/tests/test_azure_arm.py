"""The ARM client against the ARM test server (a test server, not Azure): LROs, throttling, errors, auth."""

from __future__ import annotations

import ssl
import subprocess
import time

import httpx
import pytest

from aib_provider_azure import StaticTokenCredential
from aib_provider_azure.arm import COMPUTE_API, ArmClient, ArmError
from aib_provider_azure.credentials import AccessToken, TokenProvider
from aib_provider_azure.settings import PUBLIC_ARM_SCOPE, AzureSettings
from aib_provider_azure.testing.arm_server import ArmState, run_arm_server
from aib_sdk.errors import DistributeError
from aib_sdk.runtime import RetryPolicy, retry_after

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

RG = "/subscriptions/0000-1111/resourceGroups/rg1/providers/Microsoft.Compute"
IMAGE = f"{RG}/images/img1"
TOKEN = "test-token-not-a-secret"


def image_body(**overrides):
    body = {
        "location": "eastus",
        "properties": {
            "hyperVGeneration": "V2",
            "storageProfile": {
                "osDisk": {
                    "osType": "Linux",
                    "osState": "Generalized",
                    "blobUri": "https://acct.blob.core.windows.net/c/x.vhd",
                }
            },
        },
    }
    body.update(overrides)
    return body


def client_for(http: httpx.AsyncClient, arm, token: str = TOKEN, **kw) -> ArmClient:
    return ArmClient(
        http, arm.url, TokenProvider(StaticTokenCredential(token)), scope=PUBLIC_ARM_SCOPE, poll_interval=0.01, **kw
    )


async def test_put_waits_for_the_async_operation(arm) -> None:
    arm.state.lro_polls = 3
    async with httpx.AsyncClient() as http:
        client = client_for(http, arm)
        image = await client.put(IMAGE, image_body(), COMPUTE_API)
    assert image["properties"]["provisioningState"] == "Succeeded"
    assert image["id"] == IMAGE
    polls = [p for m, p in arm.state.requests if "/operations/" in p]
    assert len(polls) == 3  # InProgress, InProgress, Succeeded
    assert arm.state.requests[0] == ("PUT", IMAGE)


async def test_throttling_is_retried_after_retry_after(arm) -> None:
    arm.throttle(2, retry_after=1)
    async with httpx.AsyncClient() as http:
        client = client_for(http, arm)
        started = time.monotonic()
        image = await client.put(IMAGE, image_body(), COMPUTE_API)
        elapsed = time.monotonic() - started
    assert image["properties"]["provisioningState"] == "Succeeded"
    assert elapsed >= 2.0  # two 429s, each asking for one second
    assert [m for m, p in arm.state.requests[:3]] == ["PUT", "PUT", "PUT"]


async def test_transient_server_errors_are_retried_then_surface(arm) -> None:
    arm.inject(503, "ServiceUnavailable", "try later", method="PUT")
    async with httpx.AsyncClient() as http:
        client = client_for(http, arm, policy=RetryPolicy(attempts=3, base=0.01))
        await client.put(IMAGE, image_body(), COMPUTE_API)
        arm.inject(500, "InternalServerError", "boom", method="GET", count=5)
        with pytest.raises(ArmError, match="InternalServerError: boom"):
            await client.get(IMAGE, COMPUTE_API)


@pytest.mark.parametrize(
    ("mutate", "code", "fragment"),
    [
        (lambda b: b["properties"].pop("hyperVGeneration"), "InvalidParameter", "hyperVGeneration"),
        (lambda b: b["properties"]["storageProfile"]["osDisk"].pop("osState"), "InvalidParameter", "osState"),
        (lambda b: b["properties"]["storageProfile"]["osDisk"].pop("blobUri"), "InvalidParameter", "blobUri"),
        (lambda b: b["properties"]["storageProfile"]["osDisk"].update(osType="Plan9"), "InvalidParameter", "Plan9"),
        (lambda b: b["properties"].update(bogus=1), "InvalidRequestContent", "bogus"),
    ],
)
async def test_bad_bodies_are_rejected_with_arm_errors(arm, mutate, code, fragment) -> None:
    body = image_body()
    mutate(body)
    async with httpx.AsyncClient() as http:
        with pytest.raises(ArmError, match=fragment) as info:
            await client_for(http, arm).put(IMAGE, body, COMPUTE_API)
    assert info.value.status == 400 and info.value.code == code
    assert arm.resource(IMAGE) is None


async def test_wrong_token_is_refused_and_token_is_requested_for_arm_scope(arm) -> None:
    credential = StaticTokenCredential("wrong")
    async with httpx.AsyncClient() as http:
        client = ArmClient(http, arm.url, TokenProvider(credential), scope=PUBLIC_ARM_SCOPE, poll_interval=0.01)
        with pytest.raises(ArmError, match="401 AuthenticationFailed"):
            await client.put(IMAGE, image_body(), COMPUTE_API)
    assert credential.scopes == [PUBLIC_ARM_SCOPE]


async def test_get_missing_is_none_and_delete_waits(arm) -> None:
    async with httpx.AsyncClient() as http:
        client = client_for(http, arm)
        assert await client.get(IMAGE, COMPUTE_API) is None
        await client.put(IMAGE, image_body(), COMPUTE_API)
        assert [i["name"] for i in await client.list(f"{RG}/images", COMPUTE_API)] == ["img1"]
        await client.delete(IMAGE, COMPUTE_API)
        assert await client.get(IMAGE, COMPUTE_API) is None


async def test_failed_operation_raises_its_error(arm) -> None:
    arm.state.replication_polls = 1
    arm.add(f"{RG}/galleries/g1", {"location": "eastus"})
    arm.add(f"{RG}/galleries/g1/images/def1", {"location": "eastus", "properties": {}})
    arm.state.fail_regions = {"westus"}
    body = {
        "location": "eastus",
        "properties": {
            "publishingProfile": {"targetRegions": [{"name": "eastus"}, {"name": "westus"}]},
            "storageProfile": {"osDiskImage": {"source": {"uri": "https://a.blob.core.windows.net/c/x.vhd"}}},
        },
    }
    async with httpx.AsyncClient() as http:
        with pytest.raises(ArmError, match=r"ReplicationFailed.*westus"):
            await client_for(http, arm).put(f"{RG}/galleries/g1/images/def1/versions/1.0.0", body, "2023-07-03")


def test_retry_after_forms() -> None:
    assert retry_after({"Retry-After": "7"}) == 7.0
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after({}) is None


async def test_location_header_operations_are_polled_to_the_end(arm) -> None:
    arm.state.lro_header = "Location"
    arm.state.lro_polls = 2
    async with httpx.AsyncClient() as http:
        client = client_for(http, arm)
        image = await client.put(IMAGE, image_body(), COMPUTE_API)
        assert image["properties"]["provisioningState"] == "Succeeded"
        await client.delete(IMAGE, COMPUTE_API)
        assert await client.get(IMAGE, COMPUTE_API) is None
    polls = [p for m, p in arm.state.requests if "/operations/" in p]
    assert len(polls) == 4  # two for the PUT, two for the DELETE


class SyncCredential:
    """A synchronous azure-core style credential (called in a worker thread)."""

    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str):
        self.calls += 1
        return AccessToken(TOKEN, int(time.time()) + 3600)


async def test_sync_credentials_work_and_tokens_are_cached(arm) -> None:
    credential = SyncCredential()
    async with httpx.AsyncClient() as http:
        client = ArmClient(http, arm.url, TokenProvider(credential), scope=PUBLIC_ARM_SCOPE, poll_interval=0.01)
        await client.put(IMAGE, image_body(), COMPUTE_API)
        assert (await client.get(IMAGE, COMPUTE_API))["name"] == "img1"
    assert credential.calls == 1


@pytest.fixture
def tls_files(tmp_path):
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_private_tls_needs_the_ca_bundle_and_is_never_skipped(tls_files) -> None:
    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with run_arm_server(ArmState(token=TOKEN, retry_after=0), tls=context) as server:
        assert server.url.startswith("https://")
        trusted = AzureSettings(arm_endpoint=server.url, ca_bundle=str(cert))
        async with httpx.AsyncClient(verify=trusted.verify()) as http:
            await client_for(http, server).put(IMAGE, image_body(), COMPUTE_API)
        async with httpx.AsyncClient(verify=AzureSettings(arm_endpoint=server.url).verify()) as http:
            with pytest.raises(DistributeError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                await client_for(http, server, policy=RetryPolicy(attempts=1)).get(IMAGE, COMPUTE_API)


async def test_operations_that_never_finish_time_out_as_distribute_errors(arm) -> None:
    arm.state.lro_polls = 1_000_000
    async with httpx.AsyncClient() as http:
        client = client_for(http, arm, timeout=0.5)
        with pytest.raises(DistributeError, match="still not finished"):
            await client.put(IMAGE, image_body(), COMPUTE_API)
