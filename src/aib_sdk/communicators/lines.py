"""Bounded, linear-time line splitting for output streams (guest commands, serial consoles).

A guest may print anything: 32 MiB without a newline must cost neither quadratic time (re-scanning a growing
buffer on every chunk) nor unbounded memory. :class:`LineBuffer` scans each character once and never holds more
than ``max_line`` characters of an unfinished line; a longer line is handed out in ``max_line`` pieces.
"""

from __future__ import annotations

MAX_LINE = 64 * 1024
"""Characters of one line kept before it is handed out in pieces."""


class LineBuffer:
    """Feed text chunks, get whole lines (without ``\\n``; a trailing ``\\r`` is removed)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max(1, max_line)
        self._parts: list[str] = []
        self._size = 0

    @property
    def held(self) -> int:
        """Characters of the unfinished line held now (always below ``max_line``)."""
        return self._size

    def feed(self, text: str) -> list[str]:
        """The lines completed by ``text`` (and pieces of an over-long line)."""
        out: list[str] = []
        start = 0
        while (end := text.find("\n", start)) >= 0:
            self._parts.append(text[start:end])
            out.append(self._take())
            start = end + 1
        rest = text[start:]
        if rest:
            self._parts.append(rest)
            self._size += len(rest)
            while self._size >= self.max_line:
                joined = "".join(self._parts)
                out.append(joined[: self.max_line])
                remainder = joined[self.max_line :]
                self._parts, self._size = ([remainder] if remainder else []), len(remainder)
        return out

    def flush(self) -> list[str]:
        """The unfinished last line, if any (at the end of the stream)."""
        return [self._take()] if self._parts else []

    def _take(self) -> str:
        line = "".join(self._parts)
        self._parts, self._size = [], 0
        return line[:-1] if line.endswith("\r") else line
