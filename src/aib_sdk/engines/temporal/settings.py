"""``[temporal]`` settings (aib.toml / ``AIB_TEMPORAL_*``) merged with command-line values, and the client connection.

Keys: ``address`` (HOST:PORT), ``namespace`` (default ``default``), ``task_queue`` (default ``aib-builds``),
``tls_cert``/``tls_key`` (client certificate files; either one turns TLS on), ``tls_ca`` (server CA file),
``api_key`` (Temporal Cloud API key; turns TLS on), ``artifact_store`` (a directory shared by submitters and
workers, where local inputs travel by sha256), ``heartbeat_timeout`` (seconds a worker may go silent before its
build is retried elsewhere; default 60).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aib_sdk.config import Config
from aib_sdk.errors import UsageError

if TYPE_CHECKING:
    from temporalio.client import Client

SECTION = "temporal"
DEFAULT_NAMESPACE = "default"
DEFAULT_TASK_QUEUE = "aib-builds"
DEFAULT_HEARTBEAT_TIMEOUT = 60.0


@dataclass(frozen=True)
class TemporalSettings:
    """Where the cluster is and how to reach it."""

    address: str
    namespace: str = DEFAULT_NAMESPACE
    task_queue: str = DEFAULT_TASK_QUEUE
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    api_key: str | None = None
    artifact_store: str | None = None
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert or self.tls_key or self.tls_ca or self.api_key)

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        address: str | None = None,
        namespace: str | None = None,
        task_queue: str | None = None,
    ) -> TemporalSettings:
        """The ``[temporal]`` table with explicit values (``--temporal``, ``--namespace``, ``--task-queue``) winning."""
        table: dict[str, Any] = config.section(SECTION)
        address = address or _text(table, "address")
        if not address:
            raise UsageError("no Temporal address: pass --temporal HOST:PORT or set [temporal] address in aib.toml")
        if ":" not in address:
            raise UsageError(f"--temporal expects HOST:PORT, got {address!r}")
        cert, key = _path(table, "tls_cert"), _path(table, "tls_key")
        if bool(cert) != bool(key):
            raise UsageError("[temporal] tls_cert and tls_key go together (a client certificate and its key)")
        try:
            heartbeat = float(table.get("heartbeat_timeout", DEFAULT_HEARTBEAT_TIMEOUT))
        except (TypeError, ValueError):
            raise UsageError("[temporal] heartbeat_timeout must be a number of seconds") from None
        if heartbeat <= 0:
            raise UsageError("[temporal] heartbeat_timeout must be positive")
        return cls(
            address=address,
            namespace=namespace or _text(table, "namespace") or DEFAULT_NAMESPACE,
            task_queue=task_queue or _text(table, "task_queue") or DEFAULT_TASK_QUEUE,
            tls_cert=cert,
            tls_key=key,
            tls_ca=_path(table, "tls_ca"),
            api_key=_text(table, "api_key"),
            artifact_store=_text(table, "artifact_store"),
            heartbeat_timeout=heartbeat,
        )

    def with_queue(self, task_queue: str | None) -> TemporalSettings:
        return replace(self, task_queue=task_queue) if task_queue else self

    async def connect(self) -> Client:
        """A connected :class:`temporalio.client.Client` (the pydantic data converter, TLS/API key as set)."""
        import anyio
        from temporalio.client import Client
        from temporalio.service import TLSConfig

        tls: bool | TLSConfig = False
        if self.tls:

            def read(path: Path | None) -> bytes | None:
                return path.read_bytes() if path else None

            try:
                cert, key, ca = await anyio.to_thread.run_sync(
                    lambda: (read(self.tls_cert), read(self.tls_key), read(self.tls_ca))
                )
            except OSError as exc:
                raise UsageError(f"[temporal] cannot read a TLS file: {exc}") from exc
            tls = TLSConfig(client_cert=cert, client_private_key=key, server_root_ca_cert=ca)
        try:
            return await Client.connect(
                self.address, namespace=self.namespace, tls=tls, api_key=self.api_key, identity=_identity()
            )
        except RuntimeError as exc:
            raise UsageError(f"cannot connect to Temporal at {self.address}: {exc}") from exc


def _identity() -> str:
    import os
    import socket

    return f"aib@{socket.gethostname()}:{os.getpid()}"


def _text(table: dict[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise UsageError(f"[temporal] {key} must be a string")
    return value


def _path(table: dict[str, Any], key: str) -> Path | None:
    value = _text(table, key)
    return Path(value).expanduser() if value else None
