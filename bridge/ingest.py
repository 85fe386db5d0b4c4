"""The ingestion driver: importers yield history records, this batches, embeds and stores them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bridge.history import HistoryIndex
from bridge.messages import HistoryRecord

log = logging.getLogger(__name__)


@dataclass
class ImportSummary:
    imported: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


async def ingest(
    history: HistoryIndex,
    person: str,
    records: Iterable[HistoryRecord],
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Store records in batches. Ids come from the source, so importing twice adds nothing."""
    summary = ImportSummary()
    batch: list[HistoryRecord] = []
    for record in records:
        if not record.text.strip():
            summary.skipped += 1
            continue
        batch.append(record)
        if len(batch) >= batch_size:
            summary.imported += await history.add(person, batch)
            if on_batch:
                on_batch(len(batch))
            batch = []
    if batch:
        summary.imported += await history.add(person, batch)
        if on_batch:
            on_batch(len(batch))
    return summary
