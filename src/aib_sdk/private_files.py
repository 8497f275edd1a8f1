"""Files only the operator can read: ``AIB_HOME`` and everything under it is 0700 (folders) / 0600 (files).

Every file is created with its final mode (``os.open(..., 0o600)``), so there is no moment at which a key or a
log is readable by others before a ``chmod``. Blocking helpers: call them in worker threads.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and each missing parent as 0700; an existing folder keeps its mode."""
    missing = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        folder.mkdir(mode=DIR_MODE, exist_ok=True)
    return path


def ensure_private_home(home: Path) -> Path:
    """Create ``AIB_HOME`` as 0700, or narrow an existing one that others could enter (it is the SDK's own)."""
    make_private_dir(home)
    if home.stat().st_mode & 0o077:
        home.chmod(DIR_MODE)
    return home


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """``os.open`` with mode 0600 (a new file is never readable by others, not even for an instant)."""
    return os.open(path, flags | os.O_CLOEXEC, FILE_MODE)


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` creating files 0600."""
    return os.open(path, flags | os.O_CLOEXEC, FILE_MODE)


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``path`` atomically (a temporary sibling renamed into place) with mode 0600."""
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
