"""The ingestion driver: importers yield history records, this groups, batches, embeds and stores them.

Idempotent and resumable: record ids come from the source, and each batch first asks the index which ids it
already holds, so importing the same export twice adds nothing and an interrupted import, run again, skips
what was stored (without embedding it again) and goes on where it stopped. Nothing stored is ever changed by
a failed import: records are only added, never rewritten or removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from bridge.history import HistoryIndex
from bridge.importers.base import Problem
from bridge.messages import HistoryRecord
from bridge.units import with_context

log = logging.getLogger(__name__)
MAX_REPORTED_PROBLEMS = 50


@dataclass
class ImportSummary:
    imported: int = 0
    duplicates: int = 0
    skipped: int = 0
    problems: int = 0
    errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"Imported {self.imported}, already there {self.duplicates}, skipped {self.skipped}"
        return text + f", problems {self.problems}."


async def ingest(
    history: HistoryIndex,
    person: str,
    items: Iterable[HistoryRecord | Problem],
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
    *,
    chat: bool = True,
) -> ImportSummary:
    """Store an importer's records in the person's history. `chat`: the records are chat messages (the
    importer's `chat`), indexed with their neighbours; mails and documents are indexed alone."""
    summary = ImportSummary()
    batch: list[HistoryRecord] = []
    for record in with_context(_records(items, summary), chat=chat):
        if not record.text.strip():
            summary.skipped += 1  # media-only messages: kept as neighbours' context, nothing to find
            continue
        batch.append(record)
        if len(batch) >= batch_size:
            await _store(history, person, batch, summary, on_batch)
            batch = []
    await _store(history, person, batch, summary, on_batch)
    return summary


def _records(items: Iterable[HistoryRecord | Problem], summary: ImportSummary) -> Iterator[HistoryRecord]:
    for item in items:
        if isinstance(item, HistoryRecord):
            yield item
            continue
        summary.problems += 1
        log.warning("skipped while importing: %s", item)
        if len(summary.errors) < MAX_REPORTED_PROBLEMS:
            summary.errors.append(str(item))


async def _store(
    history: HistoryIndex,
    person: str,
    batch: list[HistoryRecord],
    summary: ImportSummary,
    on_batch: Callable[[int], None] | None,
) -> None:
    if not batch:
        return
    # The same id can occur twice within one batch (a mail in two folders): keep the first.
    unique = list({r.id: r for r in reversed(batch)}.values())[::-1]
    summary.duplicates += len(batch) - len(unique)
    known = await history.existing(person, [r.id for r in unique])
    fresh = [r for r in unique if r.id not in known]
    summary.duplicates += len(known)
    summary.imported += await history.add(person, fresh)
    if on_batch:
        on_batch(len(batch))
