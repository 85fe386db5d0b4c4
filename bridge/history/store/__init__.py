"""The history index: one interface, two Qdrant backends (embedded qdrant-edge, or a Qdrant server).

Every call takes the person as a required argument and every backend adds the person to every filter
it runs: there is no call path that reads or deletes across persons.

Each index records the version of its layout (edge: a JSON file in the shard folder; server: the
collection's metadata). An index that records none was written before versions were: version 1. At open,
the migrations in INDEX_MIGRATIONS the index has not had yet run in order, in place, and the version is
saved after each; an index newer than this code is refused with IndexIncompatible, and left alone.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, Protocol, Self

from bridge.messages import HistoryRecord

# Each record is indexed alone and with its neighbours (bridge/history/context_windows.py), densely and by BM25 terms.
DENSE_VECTORS = ("dense", "dense_ctx")
SPARSE_VECTORS = ("sparse", "sparse_ctx")
_ID_NAMESPACE = uuid.UUID("6f1c3a52-5d0b-4f5e-9c53-8f1d2b0c7a11")
INDEXED_KEYWORDS = ("person", "channel", "conversation", "source", "author", "language")
# How many distinct authors of one person a search knows by name (the most frequent first).
MAX_AUTHORS = 10_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]
    # A query's language: its terms are searched among records of that language (or of none told), since terms
    # stemmed by another language's rules meet only by chance, and such chance hits crowd out the dense ones.
    language: str | None = None


@dataclass(frozen=True)
class Vectorized:
    record: HistoryRecord
    dense: dict[str, list[float]]  # one per name in DENSE_VECTORS
    sparse: dict[str, SparseVector]  # one per name in SPARSE_VECTORS


@dataclass(frozen=True)
class Hit:
    record: HistoryRecord
    score: float


@dataclass(frozen=True)
class Selector:
    """Which part of one person's history a search or a deletion covers."""

    source: str | None = None
    channel: str | None = None
    conversation: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    everything: bool = False

    def narrowed(self, since: datetime, until: datetime) -> Selector | None:
        """This selector within [since, until); None where the two do not meet."""
        start = max(since, self.since) if self.since else since
        end = min(until, self.until) if self.until else until
        return replace(self, since=start, until=end) if start < end else None

    def is_empty(self) -> bool:
        return not (self.source or self.channel or self.conversation or self.since or self.until)

    def describe(self) -> str:
        if self.everything and self.is_empty():
            return "everything"
        parts = []
        if self.source:
            parts.append(f"source {self.source}")
        if self.channel:
            parts.append(f"channel {self.channel}")
        if self.conversation:
            parts.append(f"conversation {self.conversation}")
        if self.since:
            parts.append(f"since {self.since:%Y-%m-%d %H:%M}")
        if self.until:
            parts.append(f"until {self.until:%Y-%m-%d %H:%M}")
        return ", ".join(parts)


class IndexIncompatible(Exception):
    """The index on disk (or the collection) was built with other vectors than this version uses."""


class IndexDamaged(IndexIncompatible):
    """A file of the index on disk is damaged (cut short, overwritten): nothing was changed; the message names it and
    says how to repair or rebuild."""


class PersonMismatch(ValueError):
    """A record was offered for another person's history than the one named."""


RecordsRanked = Literal["all", "own", "other"]  # every record; the question's language and none told; the others


def dense_plan(
    dense: list[float], language: str | None, across: list[float] | None, alike: list[float] | None
) -> list[tuple[list[float], RecordsRanked]]:
    """Which dense query vector ranks which records (HistoryStore.search): where the question's language is
    not told, `dense` ranks them all."""
    if language is None:
        return [(dense, "all")]
    plan: list[tuple[list[float], RecordsRanked]] = [(dense, "all" if across is None else "own")]
    if across is not None:
        plan.append((across, "other"))
    if alike is not None:
        plan.append((alike, "own"))
    return plan


class HistoryStore(Protocol):
    async def open(self, dimension: int) -> None: ...
    async def upsert(self, person: str, items: Sequence[Vectorized]) -> int: ...
    async def search(
        self,
        person: str,
        dense: list[float],
        sparse: SparseVector,
        limit: int,
        candidates: int,
        selector: Selector | None = None,
        focus: Selector | None = None,
        across: list[float] | None = None,
        alike: list[float] | None = None,
    ) -> list[Hit]:
        """Reciprocal-rank fusion of every dense and sparse vector's candidates, best first.

        Where the question's language is told (`sparse.language`), two more query vectors for the same dense
        vectors may come (the embedder's multilingual part alone): `across` ranks the records told to be in another
        language, in place of `dense`, which then ranks only the question's language and records of none told;
        `alike` ranks the question's language a second time, fused in beside `dense`.

        With `focus` (a part of the selected history the question points at, such as a time span), each
        vector's candidates from that part are fused in as well: they rise, and nothing else is left out.
        """
        ...

    async def recorded_embedder(self) -> dict[str, Any] | None:
        """Which embedder made the index's vectors (EmbedderIdentity.as_dict), as the index records it; None where
        it records none (an index from before they were recorded, or a new one)."""
        ...

    async def record_embedder(self, embedder: dict[str, Any]) -> None: ...

    async def persons(self) -> list[str]:
        """Every person (or group scope) the index holds records of."""
        ...

    def staged(self, key: str) -> Self:
        """An index beside this one for `confide reindex` to build (`key`: the embedder it is built with)."""
        ...

    async def drop(self) -> None:
        """Remove this (closed) index whole: only a staged one a reindex for another model left behind."""
        ...

    async def replace_by(self, staged: Self) -> None:
        """Put a complete staged index in this one's place (both closed), so that no stop leaves neither."""
        ...

    async def authors(self, person: str) -> set[str]:
        """The authors in the person's history (up to MAX_AUTHORS, the most frequent first)."""
        ...

    async def closeness(self, person: str, dense: list[float], record_ids: Sequence[str]) -> dict[str, float]:
        """How close each of these records of the person lies to `dense`: the cosine similarity of the nearer of
        its dense vectors (alone or in context), by record id; ids the person's history lacks are left out.

        Fused scores are ranks and mean nothing across questions; a cosine is absolute, so this is what tells
        whether the best hits have anything to do with the question at all (bridge.answering.answer's relevance gate).
        """
        ...

    async def existing(self, person: str, record_ids: Sequence[str]) -> set[str]:
        """Which of these record ids the person's history already holds."""
        ...

    async def delete(self, person: str, selector: Selector) -> int: ...
    def by_author(self, author: str) -> AsyncIterator[tuple[str, HistoryRecord]]:
        """Every person's records by `author`, with their point ids (index migrations only)."""
        ...

    async def delete_points(self, point_ids: Sequence[str]) -> int:
        """Delete points by id, whoever's they are (index migrations only)."""
        ...

    async def count(self, person: str, selector: Selector | None = None) -> int: ...
    def export(self, person: str) -> AsyncIterator[HistoryRecord]: ...
    async def close(self) -> None: ...


# (version, fn): fn(store) turns an index of the version before into this one; the list starts at version 2.
# A new index is created in the newest layout and skips them all; an index a crash left between a
# migration and the saving of its version runs that migration again, so each must be safe to repeat.
IndexMigration = tuple[int, Callable[[HistoryStore], Awaitable[None]]]

# How Confide's own conversations sit in a person's history (bridge.dispatch.handler.question_record): source
# `confide:<chat>`, the person's questions with ids `q:...`; before index version 2 also its answers (`a:...`,
# author "Confide").
CONFIDE_SOURCE_PREFIX = "confide:"
CONFIDE_AUTHOR = "Confide"


def is_confide_answer(record: HistoryRecord) -> bool:
    ours = record.source.startswith(CONFIDE_SOURCE_PREFIX) and record.id.startswith("a:")
    return ours and record.author == CONFIDE_AUTHOR


async def drop_confide_answers(store: HistoryStore) -> None:
    """Index version 2: Confide's own answers are no evidence, so they leave every person's history."""
    doomed = [point async for point, record in store.by_author(CONFIDE_AUTHOR) if is_confide_answer(record)]
    deleted = await store.delete_points(doomed)
    log.info("index migration 2: removed %d of Confide's own answers from the history", deleted)


INDEX_MIGRATIONS: list[IndexMigration] = [(2, drop_confide_answers)]
UNVERSIONED = 1  # what an index that records no version is


def staged_complete(embedder: dict[str, Any] | None) -> bool:
    """Whether an index's record of its embedder says it holds every record: `confide reindex` records a staged
    index's embedder with "complete": false from its first batch on, and without it once its last is in."""
    return embedder is not None and bool(embedder) and embedder.get("complete", True) is not False


def index_version() -> int:
    """The layout this code writes: the last migration's version."""
    versions = [version for version, _ in INDEX_MIGRATIONS]
    if versions != list(range(UNVERSIONED + 1, UNVERSIONED + 1 + len(versions))):
        raise ValueError(f"INDEX_MIGRATIONS must be numbered {UNVERSIONED + 1}, {UNVERSIONED + 2}... in order")
    return UNVERSIONED + len(versions)


def refuse_newer(found: int, where: str, instead: str) -> None:
    """IndexIncompatible for an index written by a newer Confide; `instead`: what to run about it."""
    if found > (known := index_version()):
        raise IndexIncompatible(
            f"{where} was written by a newer version of Confide (index version {found}, this version knows "
            f"{known}). Nothing was changed. Run that newer version of Confide, or {instead}"
        )


async def migrate_index(
    store: HistoryStore, found: int, where: str, instead: str, save: Callable[[int], Awaitable[None]]
) -> None:
    """Bring an open index of version `found` to index_version(), saving the version after each step."""
    refuse_newer(found, where, instead)
    for version, migrate in INDEX_MIGRATIONS[found - UNVERSIONED :]:
        log.info("bringing %s to index version %d", where, version)
        await migrate(store)
        await save(version)


def point_id(person: str, record_id: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{person}\x00{record_id}"))


def nearest_of(by_point: dict[str, str], scored: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Per record id, the best score any of its points' vectors got (a record has one point, several vectors)."""
    best: dict[str, float] = {}
    for point, score in scored:
        record_id = by_point[point]
        best[record_id] = max(score, best.get(record_id, score))
    return best


def to_payload(person: str, record: HistoryRecord) -> dict[str, Any]:
    if record.person != person:
        raise PersonMismatch(f"record {record.id!r} belongs to {record.person!r}, not {person!r}")
    payload = record.model_dump(mode="json")
    payload["ts"] = record.time.timestamp()
    return payload


def from_payload(payload: dict[str, Any]) -> HistoryRecord:
    data = {k: v for k, v in payload.items() if k != "ts"}
    return HistoryRecord.model_validate(data)


def check_deletable(selector: Selector) -> None:
    if selector.is_empty() and not selector.everything:
        raise ValueError("refusing to delete with an empty selector; say everything=True to delete all")
