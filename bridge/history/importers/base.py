"""What every importer shares: the `Importer` protocol, `Problem`, `WrongKind`, stable ids, and the bounds.

An importer only reads and parses; `bridge.history.imports` drives it and `bridge.history.ingest` batches, embeds
and stores what
it yields. Each importer is cheap to build (`Cls(path, person, limits=..., **options)`, the bounds handed over from
the caller's settings): `check()` sniffs the path and raises `WrongKind` before anything is yielded, `items()`
streams, checking first only where no `check()` has passed yet (`CheckedOnce`), so an import sniffs its file once.
Nothing in a malformed file may stop an import: what cannot be read becomes a `Problem` where it arises, and
`guarded` turns anything missed into one last `Problem`.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bridge.config import ImportSettings
from bridge.messages import HistoryRecord

log = logging.getLogger(__name__)

# How much of a file `check()` reads to tell its kind: a bounded read, whatever was given by mistake.
SNIFF_BYTES = 64 * 1024
# What readers of broken files raise: zip (damaged, encrypted: RuntimeError, unknown method: NotImplementedError,
# truncated: EOFError, corrupt deflate: zlib.error), JSON (ValueError, RecursionError), dates (OverflowError,
# OSError EOVERFLOW), fields of the wrong type (TypeError, KeyError, AttributeError), text (UnicodeError).
READ_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RuntimeError,
    zlib.error,
    zipfile.BadZipFile,
)


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
    as keywords) describe its `confide import` command. `limits`: the bounds it reads with (`Settings.imports`);
    None: the documented defaults.
    """

    kind: str
    chat: bool
    detect_order: int
    summary: str
    path_help: str
    options: Mapping[str, str]

    def __init__(self, path: Path, person: str, limits: ImportSettings | None = None, **options: Any) -> None: ...

    def check(self) -> None: ...

    def items(self) -> Iterator[HistoryRecord | Problem]: ...


def import_limits(given: ImportSettings | None = None) -> ImportSettings:
    """The bounds an importer reads with: the ones its caller passed (`Settings.imports`), else the defaults. Never
    the environment: an importer does not read settings of its own, so what `confide import` and a chat upload
    bound is what the one `Settings` says."""
    return given if given is not None else ImportSettings.model_construct()


class CheckedOnce:
    """Remembers that `check()` passed: the import service (or a chat upload's detection) checks a file once, and
    `items()`, which checks first for callers that only iterate, does not sniff it again. A refusal is not
    remembered. An importer implements `sniff()` and starts `items()` with `ensure_checked()`."""

    checked = False

    def sniff(self) -> None:
        """Raise `WrongKind` unless the path is an export of this kind (a bounded read)."""
        raise NotImplementedError

    def check(self) -> None:
        self.sniff()
        self.checked = True

    def ensure_checked(self) -> None:
        if not self.checked:
            self.check()


def guarded(items: Iterator[HistoryRecord | Problem], where: str) -> Iterator[HistoryRecord | Problem]:
    """An importer's items, where an exception no reader caught ends the file with one `Problem` instead of the
    import: what was yielded before is kept. `WrongKind` (from `check()`, before anything) still propagates."""
    try:
        yield from items
    except WrongKind:
        raise
    except Exception as exc:  # the last resort: each reader catches its own errors where they arise
        log.exception("reading %s stopped", where)
        yield Problem(where, f"reading stopped: {describe(exc)}")


def describe(exc: BaseException) -> str:
    """An exception for a `Problem`: its kind and a bounded message (some carry a whole line of the file)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def cut_problem(where: str, what: str, length: int, limit: int, setting: str) -> Problem:
    """The `Problem` of a text cut at a bound, naming the setting that raises it."""
    return Problem(where, f"{what} of {length:,} characters cut at {limit:,} (CONFIDE_IMPORTS__{setting.upper()})")


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
