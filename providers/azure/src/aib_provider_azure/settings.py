"""The ``[azure]`` configuration: ARM endpoint, storage accounts, region → account map, and blob URI parsing.

```toml
[azure]
arm_endpoint = "https://management.azure.com"     # AIB_AZURE_ARM_ENDPOINT
ca_bundle = "/etc/ssl/private-ca.pem"             # private TLS; verification is never turned off
staging_storage_account = "stagingacct"           # holds the intermediate VHD of ManagedImage/SharedImage
vhd_replication_regions = ["westus"]              # VHD targets are also copied to these regions

[azure.storage.devstoreaccount1]
blob_endpoint = "http://127.0.0.1:10000/devstoreaccount1"
key = "…"                                          # Shared Key; without it a bearer token is used

[azure.regions]
westus = "devstoreaccount1"                        # region → storage account for Copy Blob replication
```
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlparse

from aib_sdk.config import Config
from aib_sdk.errors import UsageError
from aib_sdk.trust import EndpointRefused, allowed_endpoints, check_endpoint, is_public_azure_blob_host

PUBLIC_ARM_ENDPOINT = "https://management.azure.com"
PUBLIC_ARM_SCOPE = "https://management.azure.com/.default"
STORAGE_SCOPE = "https://storage.azure.com/.default"
STORAGE_VERSION = "2021-08-06"
"""The Blob service REST version every request names (``x-ms-version``)."""
_ACCOUNT_HOST = re.compile(r"^(?P<account>[a-z0-9]{3,24})\.blob\.[a-z0-9.-]+$", re.I)
_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$|^\$root$")


@dataclass(frozen=True)
class StorageAccount:
    """One storage account: its blob endpoint (no trailing slash) and, optionally, its Shared Key."""

    name: str
    blob_endpoint: str
    key: bytes | None = None
    resource_id: str | None = None

    def __repr__(self) -> str:  # never print the key
        return f"StorageAccount(name={self.name!r}, blob_endpoint={self.blob_endpoint!r})"


@dataclass(frozen=True)
class BlobRef:
    """A blob inside a known account."""

    account: StorageAccount
    container: str
    name: str

    @property
    def url(self) -> str:
        """The plain blob URI (no SAS)."""
        return f"{self.account.blob_endpoint}/{self.container}/{quote(self.name, safe='/')}"

    def with_account(self, account: StorageAccount) -> BlobRef:
        return BlobRef(account, self.container, self.name)


@dataclass(frozen=True)
class AzureSettings:
    """Parsed ``[azure]`` table (plus ``AIB_AZURE_*`` environment variables)."""

    arm_endpoint: str = PUBLIC_ARM_ENDPOINT
    arm_scope: str = PUBLIC_ARM_SCOPE
    ca_bundle: str | None = None
    staging_storage_account: str | None = None
    staging_container: str = "aib-staging"
    accounts: Mapping[str, StorageAccount] = field(default_factory=dict)
    regions: Mapping[str, str] = field(default_factory=dict)
    vhd_replication_regions: tuple[str, ...] = ()
    upload_concurrency: int = 8
    poll_interval: float = 5.0
    trusted_endpoints: tuple[str, ...] = ()
    """The operator's ``[trust] endpoints`` allow-list (:mod:`aib_sdk.trust`)."""
    create_missing: bool = False
    """``--create-missing``: a missing gallery or image definition is created in the first target region."""

    @classmethod
    def from_config(cls, config: Config) -> AzureSettings:
        section = config.section("azure")
        accounts: dict[str, StorageAccount] = {}
        storage = section.get("storage", {})
        if isinstance(storage, dict):
            for name, table in storage.items():
                if isinstance(table, dict):
                    accounts[name] = _account(name, table)
        regions_raw = section.get("regions", {})
        regions = {str(k).lower(): str(v) for k, v in regions_raw.items()} if isinstance(regions_raw, dict) else {}
        endpoint = str(section.get("arm_endpoint") or PUBLIC_ARM_ENDPOINT).rstrip("/")
        return cls(
            arm_endpoint=endpoint,
            arm_scope=str(section.get("arm_scope") or PUBLIC_ARM_SCOPE),
            ca_bundle=section.get("ca_bundle") or None,
            staging_storage_account=section.get("staging_storage_account") or None,
            staging_container=str(section.get("staging_container") or "aib-staging"),
            accounts=accounts,
            regions=regions,
            vhd_replication_regions=_str_list(section.get("vhd_replication_regions")),
            upload_concurrency=max(1, int(_number(section, "upload_concurrency", 8))),
            poll_interval=max(0.0, _number(section, "poll_interval", 5.0)),
            trusted_endpoints=tuple(allowed_endpoints(config)),
            create_missing=str(section.get("create_missing", "")).strip().lower() in ("1", "true", "yes", "on"),
        )

    def verify(self) -> ssl.SSLContext | bool:
        """httpx's ``verify``: a context trusting ``ca_bundle`` when configured, else the system trust store."""
        if not self.ca_bundle:
            return True
        try:
            return ssl.create_default_context(cafile=self.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"[azure] ca_bundle {self.ca_bundle!r} cannot be loaded: {exc}") from exc

    def account(self, name: str) -> StorageAccount:
        """A configured account, or the public-cloud endpoint of an unconfigured one (token auth)."""
        found = self.accounts.get(name)
        if found is not None:
            return found
        if not re.fullmatch(r"[a-z0-9]{3,24}", name):
            raise UsageError(f"invalid storage account name {name!r}")
        return StorageAccount(name, f"https://{name}.blob.core.windows.net")

    def region_account(self, region: str) -> StorageAccount:
        name = self.regions.get(region.lower())
        if name is None:
            raise UsageError(f"no storage account for region {region!r}: add it under [azure.regions]")
        return self.account(name)

    def parse_blob_uri(self, uri: str, default_name: str | None = None) -> BlobRef | None:
        """The blob a URI names, if it belongs to a configured endpoint or ``<account>.blob.<suffix>``.

        A container URI names ``default_name`` inside it (AIB's VHD ``uri`` may be a container). Raises
        :class:`UsageError` for a URI that is ours but malformed (no container, ``..`` segments, a query).
        """
        for account in self.accounts.values():
            prefix = account.blob_endpoint + "/"
            if uri.startswith(prefix):
                return _blob_ref(account, uri, uri[len(prefix) :], default_name)
        parsed = urlparse(uri)
        match = _ACCOUNT_HOST.match(parsed.hostname or "")
        if parsed.scheme != "https" or match is None:
            return None
        # Looks like a blob host: it gets a storage token only if it is Azure's own or the operator configured it.
        check_endpoint(
            uri,
            configured=[a.blob_endpoint for a in self.accounts.values()] + list(self.trusted_endpoints),
            public=is_public_azure_blob_host,
            what=f"blob URI {uri.split('?')[0]}",
            setting=f"[azure.storage.{match['account']}] blob_endpoint",
        )
        account = self.accounts.get(match["account"]) or StorageAccount(match["account"], f"https://{parsed.netloc}")
        return _blob_ref(account, uri, parsed.path.lstrip("/"), default_name)

    def claims_uri(self, uri: str | None) -> bool:
        if not uri:
            return False
        try:
            return self.parse_blob_uri(uri) is not None
        except EndpointRefused:
            raise  # a host the operator did not configure: refused at plan time
        except UsageError:
            return True  # ours, and publish() reports what is wrong with it


def _account(name: str, table: Mapping[str, Any]) -> StorageAccount:
    endpoint = str(table.get("blob_endpoint") or f"https://{name}.blob.core.windows.net").rstrip("/")
    key_text = table.get("key")
    key: bytes | None = None
    if key_text:
        try:
            key = base64.b64decode(str(key_text), validate=True)
        except binascii.Error as exc:
            raise UsageError(f"[azure.storage.{name}] key is not base64") from exc
    return StorageAccount(name, endpoint, key, table.get("resource_id") or None)


def _blob_ref(account: StorageAccount, uri: str, rest: str, default_name: str | None) -> BlobRef:
    if "?" in rest or "#" in rest:
        raise UsageError(f"blob URI must not carry a query (SAS) or fragment: {uri.split('?')[0]!r}")
    container, _, name = rest.partition("/")
    name = unquote(name) or (default_name or "")
    if not container or not name or not _CONTAINER.match(container):
        raise UsageError(f"not a blob URI (expected …/<container>/<blob>.vhd): {uri!r}")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"blob name must not contain empty, '.' or '..' segments: {uri!r}")
    return BlobRef(account, container, name)


def _number(section: Mapping[str, Any], key: str, default: float) -> float:
    try:
        return float(section.get(key, default))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"[azure] {key} must be a number, got {section.get(key)!r}") from exc


def _str_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v) for v in value)
