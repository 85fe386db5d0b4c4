"""A person's history: embed, index, search, forget, export. The one door to the history store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from bridge.config import Settings
from bridge.embedder import Embedder, build_embedder
from bridge.messages import HistoryRecord
from bridge.sparse import SparseEncoder
from bridge.store import HistoryStore, Hit, Selector, Vectorized


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
        texts = [index_text(r) for r in records]
        dense_task = self.embedder.embed_documents(texts)
        sparse_task = asyncio.to_thread(lambda: [self.sparse.document(t) for t in texts])
        dense, sparse = await asyncio.gather(dense_task, sparse_task)
        items = [Vectorized(r, d, s) for r, d, s in zip(records, dense, sparse, strict=True)]
        return await self.store.upsert(person, items)

    async def search(
        self, person: str, text: str, limit: int, candidates: int = 50, selector: Selector | None = None
    ) -> list[Hit]:
        dense = await self.embedder.embed_query(text)
        sparse = self.sparse.query(text)
        return await self.store.search(person, dense, sparse, limit, candidates, selector)

    async def forget(self, person: str, selector: Selector) -> int:
        return await self.store.delete(person, selector)

    async def count(self, person: str, selector: Selector | None = None) -> int:
        return await self.store.count(person, selector)

    def export(self, person: str) -> AsyncIterator[HistoryRecord]:
        return self.store.export(person)

    async def close(self) -> None:
        await self.store.close()
        await self.embedder.close()


def index_text(record: HistoryRecord) -> str:
    """What gets embedded: who said it and when matter to questions such as 'what did Anna say in May'."""
    return f"{record.author} ({record.time:%Y-%m-%d}): {record.text}" if record.author else record.text


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
