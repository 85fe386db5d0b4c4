"""The one way history comes in: `confide import KIND PATH`, `confide import matrix` and a file sent in a chat all
run `import_into`, so that an export is read once (streamed, never parsed a second time to count it), checked once,
its voice notes transcribed where a transcriber is set up, and stored through bridge.history.ingest, ending in the same
summary. Before, the CLI, the Matrix backfill and chat uploads each lined these steps up themselves, parsing an
export twice for a progress bar and checking it three times.

Callers differ only in what they show and where the history is: the CLI draws its bars from the progress callback
and hands over the index it opened or, while `confide serve` holds it, the running process's over its socket
(bridge/ops/control.py); a chat replies with the summary. The bounds importers read with come from the caller's one
`Settings` (`settings.imports`), never from the environment.

A platform's own `confide import` command (a Matrix room) fetches its records and hands them over as an
`ImportJob` through `CommandLine`, the part of the CLI it is given, so no adapter imports the CLI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from bridge.config import ImportSettings, Settings
from bridge.history.importers.base import Importer, Problem
from bridge.history.importers.registry import open_importer
from bridge.history.ingest import Histories, ImportSummary, ingest
from bridge.intake.hearing import Hearing
from bridge.messages import HistoryRecord
from bridge.models.transcriber import HoldsAudio, voice_notes

log = logging.getLogger(__name__)

Item = HistoryRecord | Problem
TWIN_BATCH = 256  # ids asked about at once: one request line over the control socket stays small


class CannotImport(Exception):
    """Why nothing was imported, phrased for the person (an unknown option, a room that cannot be read)."""


class Source(Protocol):
    """What an import reads: a checked importer, or the records a platform fetched (a Matrix room's)."""

    @property
    def chat(self) -> bool:
        """Chat messages, indexed with their neighbours; mails and documents stand alone."""

    def items(self) -> Iterable[Item]: ...


@dataclass(frozen=True)
class ImportJob:
    """One import: whose history (a person's id, or a group's scope), how progress and the log name it, what it
    reads. `twin`: the id under which a record may already be stored in another form (a group message that was a
    question to Confide, indexed live); such records are left out. `note`: said before the import starts."""

    person: str
    what: str
    source: Source
    twin: Callable[[HistoryRecord], str] | None = None
    note: str | None = None


@dataclass(frozen=True)
class ImportProgress:
    """Where an import stands: handed to the progress callback before the first record, after each batch stored
    and after each voice note heard."""

    read: int = 0  # items read from the source so far (records and problems)
    total: int | None = None  # all of them, where known without reading the export twice (fetched records)
    audio_bytes: int | None = None  # bytes of voice notes the source holds, where they are transcribed; else None
    heard_bytes: int = 0  # of them read and transcribed so far (notes already stored are never read)
    timed_bytes: int = 0  # of `heard_bytes`, those whose container says how long they play
    heard_seconds: float = 0.0  # how long `timed_bytes` play

    @property
    def seconds_per_byte(self) -> float | None:
        return self.heard_seconds / self.timed_bytes if self.timed_bytes else None


OnProgress = Callable[[ImportProgress], None]


class CommandLine(Protocol):
    """What a platform's own `confide import` command needs of the command line: bridge/cli.py hands it over as
    the typer context's `obj`, so the platform never imports the CLI."""

    def settings(self, person: str | None = None) -> Settings:
        """The settings, logging set up; exits (status 2) when they are invalid or `person` is not configured."""

    def refuse(self, message: str) -> Exception:
        """The error to raise for a command given wrongly: the message is said, the status is 2."""

    def run(self, settings: Settings, job: Callable[[], Awaitable[ImportJob]]) -> None:
        """Make the job (e.g. fetch a room), then import it as every import is shown; `CannotImport` from the job
        is said, with status 2."""


def open_checked(kind: str, path: Path, person: str, limits: ImportSettings, **options: str) -> Importer:
    """The importer of `kind` for `path`, checked: the one check of an import (its `items()` does not sniff again).
    Raises `WrongKind` or `OSError` when `path` is not such an export, `CannotImport` for an option it refuses."""
    try:
        importer = open_importer(kind, path, person, limits, **options)
    except ValueError as exc:  # an unknown kind, a WhatsApp date order that is none
        raise CannotImport(str(exc)) from None
    importer.check()
    return importer


async def import_into(
    history: Histories, job: ImportJob, hearing: Hearing | None = None, progress: OnProgress | None = None
) -> ImportSummary:
    """Read `job.source` once into `job.person`'s history: the index itself or a running Confide's
    (bridge/ops/control.py).
    `hearing`: voice notes the source holds (`HoldsAudio`) are transcribed before they are stored. `progress`: told
    where the import stands as it goes. The source is read as it is stored, never held whole."""
    items: Iterable[Item] = job.source.items()
    if job.twin is not None:
        items = await _without_twins(history, job.person, items, job.twin)
    audio = job.source if hearing is not None and isinstance(job.source, HoldsAudio) else None
    tracker = _Tracker(progress)
    if progress is not None:
        audio_bytes = await asyncio.to_thread(audio.audio_bytes) if audio is not None else None  # a folder's walk
        tracker.start(len(items) if isinstance(items, Sized) else None, audio_bytes)
    counted = _Counted(items)

    def stored(_: int) -> None:
        tracker.read(counted.read)

    transcribe = None
    if hearing is not None and audio is not None:
        transcribe = voice_notes(hearing.transcriber, audio, hearing.max_bytes, tracker.heard)
    summary = await ingest(history, job.person, counted, on_batch=stored, chat=job.source.chat, transcribe=transcribe)
    stored(0)  # the last items read may be problems or skipped ones, after the last batch
    log.info("imported %s into %s's history: %s", job.what, job.person, summary.describe())
    return summary


async def _without_twins(
    history: Histories, person: str, items: Iterable[Item], twin: Callable[[HistoryRecord], str]
) -> list[Item]:
    """The items whose twins are not stored. Only fetched records have twins, and they are held already."""
    listed = list(items)
    records = [item for item in listed if isinstance(item, HistoryRecord)]
    stored: set[str] = set()
    for start in range(0, len(records), TWIN_BATCH):
        stored |= await history.existing(person, [twin(r) for r in records[start : start + TWIN_BATCH]])
    return [item for item in listed if not (isinstance(item, HistoryRecord) and twin(item) in stored)]


class _Counted:
    """The source's items, counted as ingest reads them: progress without a second pass over the export."""

    def __init__(self, items: Iterable[Item]) -> None:
        self.items = items
        self.read = 0

    def __iter__(self) -> Iterator[Item]:
        for item in self.items:
            self.read += 1
            yield item


class _Tracker:
    """Keeps an import's `ImportProgress` and tells the callback, if any, each change."""

    def __init__(self, callback: OnProgress | None) -> None:
        self.callback = callback
        self.now = ImportProgress()

    def start(self, total: int | None, audio_bytes: int | None) -> None:
        self._tell(replace(self.now, total=total, audio_bytes=audio_bytes))

    def read(self, count: int) -> None:
        self._tell(replace(self.now, read=count))

    def heard(self, size: int, seconds: float | None) -> None:
        now = self.now
        timed = (size, seconds) if seconds is not None else (0, 0.0)
        self._tell(
            replace(
                now,
                heard_bytes=now.heard_bytes + size,
                timed_bytes=now.timed_bytes + timed[0],
                heard_seconds=now.heard_seconds + timed[1],
            )
        )

    def _tell(self, now: ImportProgress) -> None:
        self.now = now
        if self.callback is not None:
            self.callback(now)
