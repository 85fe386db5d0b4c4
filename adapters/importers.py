"""The history importers: one per kind of export, each yielding `HistoryRecord`s (or `Problem`s) in a fixed order.

An importer only reads and parses; `bridge.ingest` batches, embeds and stores what it yields. Each importer is
cheap to build: `check()` sniffs the path and raises `WrongKind` before anything is yielded, `items()` streams.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bridge.messages import HistoryRecord

KINDS = ("whatsapp", "telegram", "mbox", "maildir", "files", "locomo")
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
    kind: str

    def check(self) -> None: ...

    def items(self) -> Iterator[HistoryRecord | Problem]: ...


def open_importer(kind: str, path: Path, person: str, **options: Any) -> Importer:
    """The importer of `kind` for `path`. Options: `date_order` ("dmy", "mdy", "ymd") for WhatsApp."""
    path = Path(path)
    # Imported here, not at the top: the importer modules import `WrongKind`/`Problem` from this one.
    if kind == "whatsapp":
        from adapters.whatsapp.export import WhatsAppImporter

        return WhatsAppImporter(path, person, date_order=options.get("date_order"))
    if kind == "telegram":
        from adapters.telegram.export import TelegramImporter

        return TelegramImporter(path, person)
    if kind == "mbox":
        from adapters.email.mailbox import MboxImporter

        return MboxImporter(path, person)
    if kind == "maildir":
        from adapters.email.mailbox import MaildirImporter

        return MaildirImporter(path, person)
    if kind == "files":
        from adapters.documents import FilesImporter

        return FilesImporter(path, person)
    if kind == "locomo":
        from adapters.locomo import LocomoImporter

        return LocomoImporter(path, person)
    raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")


# The order matters: the specific formats first, plain documents (which accept any .txt) last.
_DETECT_ORDER = ("locomo", "telegram", "whatsapp", "maildir", "mbox", "files")


def detect_kind(path: Path) -> str | None:
    """The first kind whose sniff accepts `path`, or None when none does."""
    for kind in _DETECT_ORDER:
        try:
            open_importer(kind, Path(path), person="").check()
        except (WrongKind, OSError):
            continue
        return kind
    return None


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


def find_source(path: Path, person: str) -> Importer | None:
    """The importer for a file a person sent in chat, whatever its kind; None when no importer knows it."""
    kind = detect_kind(path)
    return open_importer(kind, path, person) if kind else None
