"""`confide reindex`: bring a history over to another embedding model, with nothing lost if it is stopped.

Vectors of two models cannot be compared, so an index answers only to the embedder that built it
(bridge/history/index.py refuses any other). Reindexing builds a new index beside the old one (the edge shard's
folder `.reindex`, or a collection `NAME__KEY` on a server), re-embedding each person's records in batches: their
text, neighbours and dates are read back from the old index, so nothing is imported again and nothing else is
needed. A stop leaves the old index as it was and the new one partly built; the next run skips the records it
already holds. Only once every record is in is the new index marked complete (its embedder recorded without
`"complete": false`) and does it take the old one's place: a folder move, or a Qdrant alias switch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from bridge.config import Settings
from bridge.history.index import HistoryIndex, build_store
from bridge.history.store import HistoryStore
from bridge.messages import HistoryRecord
from bridge.models.embedder import LEGACY_EMBEDDER, Embedder, EmbedderIdentity, build_embedder

log = logging.getLogger(__name__)

BATCH = 128  # records re-embedded per step: a stop loses at most one batch's work


@dataclass
class ReindexProgress:
    person: str
    done: int  # records of this person in the new index
    total: int  # records of this person in the old one


@dataclass
class ReindexSummary:
    built_by: EmbedderIdentity | None  # None: there was no index
    now: EmbedderIdentity
    records: int = 0  # in the new index
    embedded: int = 0  # re-embedded by this run (the rest a stopped run had done)

    def describe(self) -> str:
        if self.built_by is None:
            return f"There is no index yet; it will be built with {self.now.describe()}."
        if self.built_by == self.now and not self.records:
            return f"Your history's index is already built with {self.now.describe()}. Nothing to do."
        return (
            f"Re-embedded {self.embedded} record(s) with {self.now.describe()} ({self.records} in all); the index "
            f"built with {self.built_by.name} was replaced."
        )


def staged_key(identity: EmbedderIdentity) -> str:
    text = f"{identity.name}\x00{identity.revision}\x00{identity.dimension}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


async def reindex(settings: Settings, progress: Callable[[ReindexProgress], None] | None = None) -> ReindexSummary:
    """Re-embed the history with the configured embedder, resuming where a stopped run left off."""
    embedder = build_embedder(settings.embedder, settings.proxy_url)
    await embedder.open()
    try:
        return await reindex_store(build_store(settings), embedder, progress)
    finally:
        await embedder.close()


async def reindex_store(
    old: HistoryStore, embedder: Embedder, progress: Callable[[ReindexProgress], None] | None = None
) -> ReindexSummary:
    """Re-embed the (unopened) index `old` with `embedder` (open), and put the new index in its place."""
    now = embedder.identity
    recorded = await old.recorded_embedder()
    built_by = None if recorded is None else EmbedderIdentity.from_dict(recorded) if recorded else LEGACY_EMBEDDER
    if built_by is None or built_by == now:
        await old.close()
        return ReindexSummary(built_by, now)
    staged = await _staged(old, now)
    summary = ReindexSummary(built_by, now)
    try:
        await old.open(built_by.dimension)
        target = HistoryIndex(staged, embedder)
        for person in await old.persons():
            await _copy(old, target, person, summary, progress)
        await staged.record_embedder(now.as_dict())  # complete: every record is in
    finally:
        await staged.close()
        await old.close()
    await old.replace_by(staged)
    log.info("reindexed %d records (%d this run) with %s", summary.records, summary.embedded, now.describe())
    return summary


async def _staged(old: HistoryStore, now: EmbedderIdentity) -> HistoryStore:
    """The new index, opened: resumed if a stopped run began it for this same embedder, else begun afresh."""
    staged = old.staged(staged_key(now))
    found = await staged.recorded_embedder()
    if found is not None and (not found or EmbedderIdentity.from_dict(found) != now):
        # Begun for a model no longer configured (or by nobody's record): nothing of it can be kept.
        log.warning("an index begun for another model was left beside yours; starting the new one afresh")
        await staged.drop()
        found = None
    await staged.open(now.dimension)
    if found is None:  # whose it will be, from its first record on: a stop and a change of model are told apart
        await staged.record_embedder({**now.as_dict(), "complete": False})
    return staged


async def _copy(
    old: HistoryStore,
    target: HistoryIndex,
    person: str,
    summary: ReindexSummary,
    progress: Callable[[ReindexProgress], None] | None,
) -> None:
    total, done = await old.count(person), 0
    async for batch in _batches(old.export(person)):
        have = await target.store.existing(person, [r.id for r in batch])
        fresh = [r for r in batch if r.id not in have]
        if fresh:
            summary.embedded += await target.add(person, fresh)
        done += len(batch)
        if progress is not None:
            progress(ReindexProgress(person, done, total))
    summary.records += done


async def _batches(records: AsyncIterator[HistoryRecord]) -> AsyncIterator[list[HistoryRecord]]:
    batch: list[HistoryRecord] = []
    async for record in records:
        batch.append(record)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
