"""The ingestion driver: importers yield history records, this groups, batches, embeds and stores them.

Idempotent and resumable: record ids come from the source, and each batch first asks the index which ids it
already holds, so importing the same export twice adds nothing and an interrupted import, run again, skips
what was stored (without embedding it again) and goes on where it stopped. Nothing stored is ever changed by
a failed import: records are only added, never rewritten or removed.

Every record passes here on its way to the encoder, so this is where text is made safe for it: lone surrogates
are replaced, and a text longer than two passages (a 5 MB chat message) is split into passages, each its own
record, instead of being tokenized and embedded whole.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.history.context_windows import with_context
from bridge.history.importers.base import Problem
from bridge.history.importers.text import PASSAGE_CHARS, clean_text, passages
from bridge.messages import HistoryRecord

log = logging.getLogger(__name__)
MAX_REPORTED_PROBLEMS = 50
# Longer texts are split: the encoder sees about PASSAGE_CHARS of a text, and the paragraph rule of
# `passages` keeps paragraphs up to twice that whole.
LONG_TEXT_CHARS = 2 * PASSAGE_CHARS


class Histories(Protocol):
    """What an import needs of a history: the index itself, or a running Confide's (bridge/ops/control.py)."""

    async def existing(self, person: str, record_ids: Sequence[str]) -> set[str]: ...
    async def add(self, person: str, records: Sequence[HistoryRecord]) -> int: ...


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
    history: Histories,
    person: str,
    items: Iterable[HistoryRecord | Problem],
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
    *,
    chat: bool = True,
    transcribe: Callable[[HistoryRecord], Awaitable[str | None]] | None = None,
) -> ImportSummary:
    """Store an importer's records in the person's history. `chat`: the records are chat messages (the
    importer's `chat`), indexed with their neighbours; mails and documents are indexed alone. `transcribe`
    (bridge/models/transcriber.py): turns each new record that names an audio file into what was said, before it is
    embedded; it returns why it could not (a problem), and records already stored are never sent to it."""
    summary = ImportSummary()
    batch: list[HistoryRecord] = []
    for record in with_context(_split(_records(items, summary)), chat=chat):
        if not record.text.strip():
            summary.skipped += 1  # media-only messages: kept as neighbours' context, nothing to find
            continue
        batch.append(record)
        if len(batch) >= batch_size:
            await _store(history, person, batch, summary, on_batch, transcribe)
            batch = []
    await _store(history, person, batch, summary, on_batch, transcribe)
    return summary


def _records(items: Iterable[HistoryRecord | Problem], summary: ImportSummary) -> Iterator[HistoryRecord]:
    for item in items:
        if isinstance(item, HistoryRecord):
            yield _cleaned(item)
            continue
        _report(summary, item)


def _report(summary: ImportSummary, problem: Problem) -> None:
    summary.problems += 1
    log.warning("skipped while importing: %s", problem)
    if len(summary.errors) < MAX_REPORTED_PROBLEMS:
        summary.errors.append(str(problem))


def _cleaned(record: HistoryRecord) -> HistoryRecord:
    """The record with text every encoder and store accepts (in place: importers yield fresh records)."""
    record.text = clean_text(record.text)
    record.author = clean_text(record.author)
    record.conversation = clean_text(record.conversation)
    record.source = clean_text(record.source)
    record.link = clean_text(record.link) if record.link is not None else None
    record.quoted = clean_text(record.quoted) if record.quoted is not None else None
    record.signature = clean_text(record.signature) if record.signature is not None else None
    record.extra = _cleaned_value(record.extra)
    return record


def _cleaned_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if depth > 8:  # importers keep `extra` flat; a deeper value is no one's text
        return value
    if isinstance(value, dict):
        return {_cleaned_value(k, depth + 1): _cleaned_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_cleaned_value(v, depth + 1) for v in value]
    return value


def _split(records: Iterable[HistoryRecord]) -> Iterator[HistoryRecord]:
    """Records, a long one as one record per passage: the first keeps the record's id (replies and neighbours
    name it), the next ones are `id#2`, `id#3`..., each with its `passage` number. A mail's quote and signature
    stay on the first only."""
    for record in records:
        if len(record.text) <= LONG_TEXT_CHARS:
            yield record
            continue
        for number, passage in enumerate(passages(record.text), start=1):
            yield record.model_copy(
                update={
                    "id": record.id if number == 1 else f"{record.id}#{number}",
                    "text": passage,
                    "passage": number,
                    **({} if number == 1 else {"quoted": None, "signature": None}),
                }
            )


async def _store(
    history: Histories,
    person: str,
    batch: list[HistoryRecord],
    summary: ImportSummary,
    on_batch: Callable[[int], None] | None,
    transcribe: Callable[[HistoryRecord], Awaitable[str | None]] | None = None,
) -> None:
    if not batch:
        return
    # The same id can occur twice within one batch (a mail in two folders): keep the first.
    unique = list({r.id: r for r in reversed(batch)}.values())[::-1]
    summary.duplicates += len(batch) - len(unique)
    known = await history.existing(person, [r.id for r in unique])
    fresh = [r for r in unique if r.id not in known]
    summary.duplicates += len(known)
    if transcribe is not None:
        for record in (r for r in fresh if r.audio and not r.transcribed):
            if problem := await transcribe(record):
                _report(summary, Problem(record.link or record.source, problem))
            record.text = clean_text(record.text)  # what was said passes the same cleaning as imported text
    summary.imported += await history.add(person, fresh)
    if on_batch:
        on_batch(len(batch))
