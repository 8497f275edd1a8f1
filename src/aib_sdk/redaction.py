"""One redaction layer for every sink: events, ``customization.log``, ``run.json``, the template copy, ``--json``,
exception messages and the CLI display.

- URLs anywhere in a text lose their query string and user info (SAS tokens, presigned URLs, ``user:pass@``);
- every value known to be secret is replaced by ``<redacted>``: values wrapped in :class:`Secret` (generated Windows
  passwords …), configured secrets (``password``/``key``/``token``/``secret`` settings and the cloud credentials of
  the environment) and whatever a provider passes to :func:`register_secret`.

The registry is process-wide: a secret known to one build is masked in every sink of the process, which errs on the
side of hiding. Values shorter than :data:`MIN_SECRET_LENGTH` are not registered (they would mask ordinary words).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

MASK = "<redacted>"
MIN_SECRET_LENGTH = 6

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_SECRET_NAME = re.compile(r"(?:^|[_.-])(?:password|passwd|secret|token|key|sas|credential|api_key)s?$", re.I)
_SECRET_ENV = re.compile(
    r"^(?:AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|AZURE_CLIENT_SECRET|AZURE_STORAGE_KEY|AZURE_STORAGE_SAS_TOKEN"
    r"|AZURE_STORAGE_CONNECTION_STRING|AIB_\w*(?:PASSWORD|SECRET|TOKEN|_KEY))$"
)

_lock = threading.Lock()
_known: set[str] = set()
_ordered: tuple[str, ...] = ()


class Secret:
    """A secret string that prints as ``<redacted>`` (``str``, ``repr``, f-strings, logging); :meth:`reveal` gives the
    value to the one place that needs it. Creating one registers the value with the redaction layer."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")


def register_secret(value: str | Secret | None) -> None:
    """Mask ``value`` in every sink from now on."""
    text = value.reveal() if isinstance(value, Secret) else value
    if not text or len(text) < MIN_SECRET_LENGTH:
        return
    global _ordered
    with _lock:
        if text in _known:
            return
        _known.add(text)
        _ordered = tuple(sorted(_known, key=len, reverse=True))  # longest first: no half-masked overlaps


def register_config_secrets(data: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """Register every configured secret: settings named like a password/key/token (not file paths) and the cloud
    credentials of the environment."""

    def walk(value: Any, name: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, str(key))
        elif isinstance(value, str) and _SECRET_NAME.search(name) and not _looks_like_path(value):
            register_secret(value)

    walk(data, "")
    for name, value in env.items():
        if _SECRET_ENV.match(name) and not _looks_like_path(value):
            register_secret(value)


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~", "./", "../"))


def redact_url(url: str) -> str:
    """``url`` without user info, and with its query replaced by ``<redacted>`` (``file:`` URLs unchanged)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return url.split("?", 1)[0] + ("?" + MASK if "?" in url else "")
    if parts.scheme.lower() == "file" or (not parts.query and "@" not in parts.netloc):
        return url
    netloc = (host or "") + (f":{port}" if port else "")
    if host and ":" in host:
        netloc = f"[{host}]" + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, MASK if parts.query else "", ""))


def redact_text(text: str) -> str:
    """``text`` with every URL's query/user info and every known secret value removed."""
    if not text:
        return text
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


T = TypeVar("T")


def redact(value: T) -> T:
    """``value`` (text, JSON-like data, an event or other pydantic model) with :func:`redact_text` applied to every
    string in it; other values unchanged."""
    from pydantic import BaseModel

    result: Any = value
    if isinstance(value, str):
        result = redact_text(value)
    elif isinstance(value, Secret):
        result = MASK
    elif isinstance(value, Mapping):
        result = {k: redact(v) for k, v in value.items()}
    elif isinstance(value, list | tuple):
        result = type(value)(redact(v) for v in value)
    elif isinstance(value, BaseModel):
        changes = {}
        for name in type(value).model_fields:
            item = getattr(value, name)
            if isinstance(item, str | list | dict | tuple | BaseModel):
                cleaned = redact(item)
                if cleaned != item:
                    changes[name] = cleaned
        result = value.model_copy(update=changes) if changes else value
    return result  # type: ignore[no-any-return]
