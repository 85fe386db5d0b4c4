"""What every importer shares: the `Importer` protocol, `Problem`, `WrongKind`, and stable ids.

An importer only reads and parses; `bridge.ingest` batches, embeds and stores what it yields. Each importer is
cheap to build (`Cls(path, person, **options)`): `check()` sniffs the path and raises `WrongKind` before
anything is yielded, `items()` streams.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bridge.messages import HistoryRecord

# How much of a file `check()` reads to tell its kind: a bounded read, whatever was given by mistake.
SNIFF_BYTES = 64 * 1024


class WrongKind(ValueError):
    """The path is not an export of the named kind (raised by `check()`, before anything is yielded)."""


@dataclass(frozen=True)
class Problem:
    """A malformed line or mail: reported and skipped, the rest of the export still imports."""

    where: str
    why: str

    def __str__(self) -> str:
        return f"{self.where}: {self.why}"


class Importer(Protocol):
    """One export being read; a `confide.importers` entry point names its class.

    `chat` is True when its records are chat messages, which are indexed with their neighbours; mails and
    documents stand alone. `detect_order` ranks its sniff when the kind is not named: specific formats low,
    catch-alls (any .txt) high. `summary`, `path_help` and `options` (name -> help; passed to the constructor
    as keywords) describe its `confide import` command.
    """

    kind: str
    chat: bool
    detect_order: int
    summary: str
    path_help: str
    options: Mapping[str, str]

    def __init__(self, path: Path, person: str, **options: Any) -> None: ...

    def check(self) -> None: ...

    def items(self) -> Iterator[HistoryRecord | Problem]: ...


def text_head(path: Path) -> str:
    """The start of a file as text, without a byte-order mark or leading blank space: what a JSON sniff reads."""
    with path.open("rb") as file:
        return file.read(SNIFF_BYTES).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")


def stable_id(kind: str, *parts: object) -> str:
    """An id derived only from the source's own content, so importing the same thing twice adds nothing."""
    digest = hashlib.sha1("\x00".join(str(p) for p in (kind, *parts)).encode("utf-8", "surrogatepass"))
    return f"{kind}:{digest.hexdigest()[:24]}"


class Occurrences:
    """Numbers identical messages (same time, author, text) so each keeps its own id.

    Only the current timestamp's messages are remembered: chat exports are in time order, so memory stays
    bounded however long the chat is.
    """

    def __init__(self) -> None:
        self._time: datetime | None = None
        self._seen: dict[tuple[str, ...], int] = {}

    def next(self, time: datetime, *key: str) -> int:
        if time != self._time:
            self._time, self._seen = time, {}
        count = self._seen.get(key, 0)
        self._seen[key] = count + 1
        return count
