"""A person's history: embed, index, search, forget, export. The one door to the history store."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from bridge.config import Settings
from bridge.embedder import Embedder, build_embedder
from bridge.messages import HistoryRecord
from bridge.sparse import SparseEncoder
from bridge.store import HistoryStore, Hit, Selector, Vectorized
from bridge.units import CHAT_CHANNELS, context_text, line

# How much of a hit's score its neighbours in the chat receive: evidence often spans adjacent messages.
NEIGHBOUR_SHARE = 0.3
# Questions name people ("what did Anna say about the boat?"): what those people wrote weighs more.
NAMED_AUTHOR_BOOST = 2.0
_NOT_NAMES = frozenset({"me", "you", "confide", "the", "and", "unknown"})


class HistoryIndex:
    def __init__(self, store: HistoryStore, embedder: Embedder, sparse: SparseEncoder | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.sparse = sparse or SparseEncoder()

    async def open(self) -> None:
        await self.embedder.open()
        await self.store.open(self.embedder.dimension)

    async def add(self, person: str, records: Sequence[HistoryRecord]) -> int:
        if not records:
            return 0
        alone = [message_text(r) for r in records]
        dense_context = [context_text(r, before=2, after=1) for r in records]
        sparse_context = [context_text(r, before=1, after=1) for r in records]
        dense = await self.embedder.embed_documents(alone + dense_context)
        sparse = await asyncio.to_thread(lambda: [self.sparse.document(t) for t in alone + sparse_context])
        n = len(records)
        items = [
            Vectorized(
                record,
                dense={"dense": dense[i], "dense_ctx": dense[n + i]},
                sparse={"sparse": sparse[i], "sparse_ctx": sparse[n + i]},
            )
            for i, record in enumerate(records)
        ]
        return await self.store.upsert(person, items)

    async def search(
        self, person: str, text: str, limit: int, candidates: int = 50, selector: Selector | None = None
    ) -> list[Hit]:
        dense = await self.embedder.embed_query(text)
        sparse = self.sparse.query(text)
        hits = await self.store.search(person, dense, sparse, max(limit, candidates), candidates, selector)
        return favour_named_authors(lift_neighbours(hits), text)[:limit]

    async def existing(self, person: str, record_ids: Sequence[str]) -> set[str]:
        return await self.store.existing(person, record_ids)

    async def forget(self, person: str, selector: Selector) -> int:
        return await self.store.delete(person, selector)

    async def count(self, person: str, selector: Selector | None = None) -> int:
        return await self.store.count(person, selector)

    def export(self, person: str) -> AsyncIterator[HistoryRecord]:
        return self.store.export(person)

    async def close(self) -> None:
        await self.store.close()
        await self.embedder.close()


def message_text(record: HistoryRecord) -> str:
    """What a record is found by: who said it matters ("what did Anna say about ..."), and outside chats
    the subject or file name says what the text is about."""
    if record.channel in CHAT_CHANNELS:
        return line(record)
    return f"{record.conversation}\n{line(record)}" if record.conversation else line(record)


def lift_neighbours(hits: list[Hit]) -> list[Hit]:
    """Give the chat neighbours of each candidate a share of its fused score, then re-rank."""
    scores = {hit.record.id: hit.score for hit in hits}
    for hit in hits:
        for neighbour in (hit.record.extra.get("prev"), hit.record.extra.get("next")):
            if neighbour in scores:
                scores[neighbour] += NEIGHBOUR_SHARE * hit.score
    lifted = [replace(hit, score=scores[hit.record.id]) for hit in hits]
    return sorted(lifted, key=lambda h: h.score, reverse=True)


def favour_named_authors(hits: list[Hit], question: str) -> list[Hit]:
    """Multiply the score of hits whose author the question names (by any part of the name), then re-rank."""
    words = set(re.findall(r"\w+", question.lower()))

    def named(author: str) -> bool:
        parts = {p for p in re.findall(r"\w+", author.lower()) if len(p) >= 3 and p not in _NOT_NAMES}
        return bool(parts & words)

    boosted = [replace(h, score=h.score * NAMED_AUTHOR_BOOST) if named(h.record.author) else h for h in hits]
    return sorted(boosted, key=lambda h: h.score, reverse=True)


def build_store(settings: Settings) -> HistoryStore:
    if settings.store.backend == "server":
        from bridge.store.server import ServerStore

        assert settings.store.url is not None
        api_key = settings.store.api_key.get_secret_value() if settings.store.api_key else None
        return ServerStore.connect(settings.store.url, api_key, settings.store.collection, settings.retrieval.rrf_k)
    from bridge.store.edge import EdgeStore

    return EdgeStore(settings.shard_path, settings.retrieval.rrf_k)


def build_history(settings: Settings) -> HistoryIndex:
    return HistoryIndex(build_store(settings), build_embedder(settings.embedder))
