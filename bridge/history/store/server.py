"""Server backend: a Qdrant server through qdrant-client (tested through its local mode, same API)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from bridge.config import StoreSettings
from bridge.history.store import (
    DENSE_VECTORS,
    INDEXED_KEYWORDS,
    MAX_AUTHORS,
    SPARSE_VECTORS,
    UNVERSIONED,
    Hit,
    IndexIncompatible,
    Selector,
    SparseVector,
    Vectorized,
    check_deletable,
    dense_plan,
    from_payload,
    index_version,
    migrate_index,
    nearest_of,
    point_id,
    refuse_newer,
    staged_complete,
    to_payload,
)
from bridge.history.store.cluster import collection_layout, connect, dense_params, search_params
from bridge.messages import HistoryRecord

log = logging.getLogger(__name__)
VERSION_KEY = "confide_index_version"  # in the collection's metadata
EMBEDDER_KEY = "confide_embedder"  # which embedder made the vectors, beside the version
STAGED_INFIX = "__"  # COLLECTION__KEY: a collection confide reindex builds


def _in_language(where: models.Filter, language: str | None) -> models.Filter:
    """`where`, narrowed to records of `language` or of none told (all of them where the language is None)."""
    if language is None:
        return where
    told = models.FieldCondition(key="language", match=models.MatchValue(value=language))
    untold = models.IsEmptyCondition(is_empty=models.PayloadField(key="language"))
    return models.Filter(must=where.must, should=[told, untold])


def _in_other_languages(where: models.Filter, language: str) -> models.Filter:
    """`where`, narrowed to records told to be in another language than `language`."""
    told = models.FieldCondition(key="language", match=models.MatchValue(value=language))
    untold = models.IsEmptyCondition(is_empty=models.PayloadField(key="language"))
    return models.Filter(must=where.must, must_not=[told, untold])


def _filter(person: str, selector: Selector | None, point_ids: Iterable[str] = ()) -> models.Filter:
    must: list[Any] = [models.FieldCondition(key="person", match=models.MatchValue(value=person))]
    if point_ids:
        must.append(models.HasIdCondition(has_id=list(point_ids)))
    if selector is not None:
        for key in ("source", "channel", "conversation"):
            value = getattr(selector, key)
            if value:
                must.append(models.FieldCondition(key=key, match=models.MatchValue(value=value)))
        if selector.since or selector.until:
            must.append(
                models.FieldCondition(
                    key="ts",
                    range=models.Range(
                        gte=selector.since.timestamp() if selector.since else None,
                        lt=selector.until.timestamp() if selector.until else None,
                    ),
                )
            )
    return models.Filter(must=must)


class ServerStore:
    """`layout`: the cluster settings a new collection is created with and searched by (bridge/history/store/
    cluster.py); by default Qdrant's own."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        collection: str,
        rrf_k: int = 10,
        owns_client: bool = True,
        layout: StoreSettings | None = None,
    ) -> None:
        self.client = client
        self.collection = collection
        self.rrf_k = rrf_k
        self._owns_client = owns_client  # a staged store shares its parent's client
        self.layout = layout or StoreSettings()
        self._search_params = search_params(self.layout)

    def staged(self, key: str) -> ServerStore:
        """The collection `confide reindex` builds for the embedder `key` names; the configured name then becomes an
        alias of it (Qdrant's way to switch collections at once)."""
        return ServerStore(
            self.client, f"{self.collection}{STAGED_INFIX}{key}", self.rrf_k, owns_client=False, layout=self.layout
        )

    async def drop(self) -> None:
        await self.client.delete_collection(self.collection)

    async def replace_by(self, staged: ServerStore) -> None:
        """Point the configured name at a complete staged collection, then drop the collection it named. A real
        collection of that name goes first (an alias cannot share its name); a stop right then is finished by the
        next open."""
        aliases = {a.alias_name: a.collection_name for a in (await self.client.get_aliases()).aliases}
        before = aliases.get(self.collection)
        switch: list[models.AliasOperations] = []
        if before is None:
            await self.client.delete_collection(self.collection)
        else:
            switch.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.collection)))
        switch.append(self._alias_to(staged.collection))
        await self.client.update_collection_aliases(change_aliases_operations=switch)
        if before is not None and before != staged.collection:
            await self.client.delete_collection(before)

    def _alias_to(self, collection: str) -> models.CreateAliasOperation:
        return models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=collection, alias_name=self.collection)
        )

    async def _finish_replacing(self) -> None:
        """The configured name names nothing, and a complete staged collection exists: the switch was stopped."""
        if await self.client.collection_exists(self.collection):
            return
        prefix = f"{self.collection}{STAGED_INFIX}"
        for found in (await self.client.get_collections()).collections:
            if not found.name.startswith(prefix):
                continue
            if staged_complete(await ServerStore(self.client, found.name).recorded_embedder()):
                log.warning("finishing the switch of collection %r to %r", self.collection, found.name)
                await self.client.update_collection_aliases(change_aliases_operations=[self._alias_to(found.name)])
                return

    @classmethod
    def connect(cls, settings: StoreSettings, rrf_k: int = 10) -> ServerStore:
        return cls(connect(settings), settings.collection, rrf_k, layout=settings)

    async def open(self, dimension: int) -> None:
        await self._finish_replacing()
        where = f"collection {self.collection!r}"
        instead = (
            "start an empty index: set CONFIDE_STORE__COLLECTION to a new name and import your history again "
            "(confide import KIND PATH --person ID)."
        )
        if await self.client.collection_exists(self.collection):
            metadata = (await self.client.get_collection(self.collection)).config.metadata or {}
            found = int(metadata.get(VERSION_KEY) or UNVERSIONED)
            refuse_newer(found, where, instead)
            await self._check_vectors()
        else:
            found = index_version()
            await self.client.create_collection(
                self.collection,
                vectors_config={name: dense_params(dimension, self.layout) for name in DENSE_VECTORS},
                sparse_vectors_config={
                    name: models.SparseVectorParams(modifier=models.Modifier.IDF) for name in SPARSE_VECTORS
                },
                metadata={VERSION_KEY: found},
                **collection_layout(self.layout),
            )
        await self._ensure_indexes()
        await migrate_index(self, found, where, instead, self._save_version)

    async def recorded_embedder(self) -> dict[str, Any] | None:
        """None for no collection yet, {} for one that records none (also before `open`)."""
        await self._finish_replacing()
        if not await self.client.collection_exists(self.collection):
            return None
        metadata = (await self.client.get_collection(self.collection)).config.metadata or {}
        embedder = metadata.get(EMBEDDER_KEY)
        return embedder if isinstance(embedder, dict) else {}

    async def record_embedder(self, embedder: dict[str, Any]) -> None:
        await self.client.update_collection(self.collection, metadata={EMBEDDER_KEY: embedder})

    async def persons(self) -> list[str]:
        found = await self.client.facet(self.collection, "person", limit=1_000_000, exact=True)
        return sorted(str(hit.value) for hit in found.hits)

    async def _save_version(self, version: int) -> None:
        await self.client.update_collection(self.collection, metadata={VERSION_KEY: version})  # merged with the rest

    async def _ensure_indexes(self) -> None:
        """Payload indexes the filters and facets need; one added by a later version is created here."""
        present = set((await self.client.get_collection(self.collection)).payload_schema or {})
        for key in INDEXED_KEYWORDS:
            if key not in present:
                schema = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=key == "person")
                await self.client.create_payload_index(self.collection, key, field_schema=schema)
        if "ts" not in present:
            await self.client.create_payload_index(self.collection, "ts", field_schema=models.PayloadSchemaType.FLOAT)

    async def _check_vectors(self) -> None:
        params = (await self.client.get_collection(self.collection)).config.params
        dense = set(params.vectors or {}) if isinstance(params.vectors, dict) else set()
        sparse = set(params.sparse_vectors or {})
        if dense != set(DENSE_VECTORS) or sparse != set(SPARSE_VECTORS):
            raise IndexIncompatible(
                f"collection {self.collection!r} has vectors {sorted(dense | sparse)}, this version of Confide "
                f"needs {sorted(DENSE_VECTORS + SPARSE_VECTORS)}. Nothing was changed; use another collection "
                "name (CONFIDE_STORE__COLLECTION) and import your history again."
            )

    async def upsert(self, person: str, items: Sequence[Vectorized]) -> int:
        if not items:
            return 0
        points = [
            models.PointStruct(
                id=point_id(person, item.record.id),
                vector={
                    **{name: list(item.dense[name]) for name in DENSE_VECTORS},
                    **{
                        name: models.SparseVector(indices=item.sparse[name].indices, values=item.sparse[name].values)
                        for name in SPARSE_VECTORS
                    },
                },
                payload=to_payload(person, item.record),
            )
            for item in items
        ]
        await self.client.upsert(self.collection, points=points, wait=True)
        return len(points)

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
        where = _filter(person, selector)
        wheres = [where] if focus is None else [where, _filter(person, focus)]
        language = sparse.language
        narrow = {
            "all": lambda part: part,
            "own": lambda part: _in_language(part, language),
            "other": lambda part: _in_other_languages(part, language or ""),
        }
        prefetch = [
            models.Prefetch(
                query=list(vector),
                using=name,
                limit=candidates,
                filter=narrow[ranked](part),
                params=self._search_params,
            )
            for vector, ranked in dense_plan(dense, language, across, alike)
            for part in wheres
            for name in DENSE_VECTORS
        ]
        if sparse.indices:
            query_vector = models.SparseVector(indices=sparse.indices, values=sparse.values)
            prefetch += [
                models.Prefetch(
                    query=query_vector, using=name, limit=candidates, filter=_in_language(part, sparse.language)
                )
                for part in wheres
                for name in SPARSE_VECTORS
            ]
        response = await self.client.query_points(
            self.collection,
            prefetch=prefetch,
            query=models.RrfQuery(rrf=models.Rrf(k=self.rrf_k)),
            query_filter=where,
            limit=limit,
            with_payload=True,
        )
        return [Hit(from_payload(p.payload or {}), p.score) for p in response.points]

    async def authors(self, person: str) -> set[str]:
        response = await self.client.facet(
            self.collection, "author", facet_filter=_filter(person, None), limit=MAX_AUTHORS, exact=False
        )
        return {str(hit.value) for hit in response.hits}

    async def closeness(self, person: str, dense: list[float], record_ids: Sequence[str]) -> dict[str, float]:
        if not record_ids:
            return {}
        by_point = {point_id(person, rid): rid for rid in record_ids}
        where = _filter(person, None, by_point)
        requests = [
            models.QueryRequest(
                query=list(dense), using=name, filter=where, limit=len(by_point), params=self._search_params
            )
            for name in DENSE_VECTORS
        ]
        found = await self.client.query_batch_points(self.collection, requests)
        return nearest_of(by_point, ((str(p.id), p.score) for response in found for p in response.points))

    async def existing(self, person: str, record_ids: Sequence[str]) -> set[str]:
        if not record_ids:
            return set()
        by_point = {point_id(person, rid): rid for rid in record_ids}
        found = await self.client.retrieve(self.collection, ids=list(by_point), with_payload=False, with_vectors=False)
        return {by_point[str(r.id)] for r in found}

    async def delete(self, person: str, selector: Selector) -> int:
        check_deletable(selector)
        where = _filter(person, selector)
        count = (await self.client.count(self.collection, count_filter=where, exact=True)).count
        if count:
            await self.client.delete(self.collection, points_selector=models.FilterSelector(filter=where), wait=True)
        return count

    async def count(self, person: str, selector: Selector | None = None) -> int:
        where = _filter(person, selector)
        return (await self.client.count(self.collection, count_filter=where, exact=True)).count

    async def export(self, person: str) -> AsyncIterator[Any]:
        async for _, record in self._scroll(_filter(person, None)):
            yield record

    async def by_author(self, author: str) -> AsyncIterator[tuple[str, HistoryRecord]]:
        """Every person's records by `author`, with their point ids: for index migrations only."""
        where = models.Filter(must=[models.FieldCondition(key="author", match=models.MatchValue(value=author))])
        async for found in self._scroll(where):
            yield found

    async def _scroll(self, where: models.Filter) -> AsyncIterator[tuple[str, HistoryRecord]]:
        offset: Any = None
        while True:
            records, offset = await self.client.scroll(
                self.collection, scroll_filter=where, limit=256, offset=offset, with_payload=True
            )
            for record in records:
                yield str(record.id), from_payload(record.payload or {})
            if offset is None:
                return

    async def delete_points(self, point_ids: Sequence[str]) -> int:
        """Delete these points, whoever's they are: for index migrations only."""
        if not point_ids:
            return 0
        ids: list[models.ExtendedPointId] = list(point_ids)
        await self.client.delete(self.collection, points_selector=models.PointIdsList(points=ids), wait=True)
        return len(ids)

    async def close(self) -> None:
        if self._owns_client:
            await self.client.close()
