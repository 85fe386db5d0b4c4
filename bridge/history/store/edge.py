"""Embedded backend: the Qdrant engine in-process (qdrant-edge-py), on disk under the data directory.

qdrant-edge has no network code paths of its own (no cloud sync is configured or called here); a
shard directory belongs to one process at a time, which `bridge.app.data_dir_lock` enforces with a lock file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, cast

import qdrant_edge as qe

from bridge.history.store import (
    DENSE_VECTORS,
    INDEXED_KEYWORDS,
    MAX_AUTHORS,
    SPARSE_VECTORS,
    UNVERSIONED,
    Hit,
    IndexDamaged,
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
from bridge.messages import HistoryRecord

log = logging.getLogger(__name__)
VERSION_FILE = "confide-index.json"  # in the shard folder, so the version moves with it
# Beside the shard folder: an index being built to replace it (confide reindex), and the old one while it is replaced.
STAGED_SUFFIX, REPLACED_SUFFIX = ".reindex", ".replaced"
# How a new index stores its dense vectors: half the memory of float32 (an import's peak is budgeted,
# benchmarks/mbox_memory.py), and cosines within 1e-3 of it. Every index before held float32, and said nothing of it.
NEW_VECTORS, OLD_VECTORS = "float16", "float32"
DATATYPES = {"float16": qe.VectorStorageDatatype.Float16, "float32": qe.VectorStorageDatatype.Float32}


def _in_language(where: qe.Filter, language: str | None) -> qe.Filter:
    """`where`, narrowed to records of `language` or of none told (all of them where the language is None)."""
    if language is None:
        return where
    told = qe.FieldCondition(key="language", match=qe.MatchValue(language))
    return qe.Filter(must=where.must, should=[told, qe.IsEmptyCondition(key="language")])


def _in_other_languages(where: qe.Filter, language: str) -> qe.Filter:
    """`where`, narrowed to records told to be in another language than `language`."""
    told = qe.FieldCondition(key="language", match=qe.MatchValue(language))
    return qe.Filter(must=where.must, must_not=[told, qe.IsEmptyCondition(key="language")])


class _Recorded(NamedTuple):
    """What an index's version file says of it."""

    version: int
    embedder: dict[str, Any] | None  # which embedder made the vectors; None: not said (an index from before)
    vectors: str | None  # how its dense vectors are stored; None: not said (float32 or, written again by hand, float16)


def _config(dimension: int, datatype: str) -> qe.EdgeConfig:
    vectors = qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine, datatype=DATATYPES[datatype])
    return qe.EdgeConfig(
        vectors={name: vectors for name in DENSE_VECTORS},
        sparse_vectors={name: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf) for name in SPARSE_VECTORS},
    )


def _filter(person: str, selector: Selector | None, point_ids: Iterable[str] = ()) -> qe.Filter:
    must: list[Any] = [qe.FieldCondition(key="person", match=qe.MatchValue(person))]
    if point_ids:
        must.append(qe.HasIdCondition(set(point_ids)))
    if selector is not None:
        for key in ("source", "channel", "conversation"):
            value = getattr(selector, key)
            if value:
                must.append(qe.FieldCondition(key=key, match=qe.MatchValue(value)))
        if selector.since or selector.until:
            must.append(
                qe.FieldCondition(
                    key="ts",
                    range=qe.RangeFloat(
                        gte=selector.since.timestamp() if selector.since else None,
                        lt=selector.until.timestamp() if selector.until else None,
                    ),
                )
            )
    return qe.Filter(must=must)


class EdgeStore:
    def __init__(self, path: Path, rrf_k: int = 10) -> None:
        self.path = path
        self.rrf_k = rrf_k
        self._shard: qe.EdgeShard | None = None
        self._embedder: dict[str, Any] | None = None  # which embedder made the vectors, as the version file says
        self._stored_as = NEW_VECTORS  # how the dense vectors are stored, as the version file says
        self._where = f"the index at {path}"
        self._instead = (
            f"start an empty index: move that folder away (mv {path} {path}.old) and import your history again "
            "(confide import KIND PATH --person ID)."
        )
        # Writes go through one thread (one writer per shard); reads may run beside them.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confide-edge-write")
        # Upserts waiting while one is written go together in the next write (a group commit): the live bridge
        # indexes every question alone, and one shard update per question capped it under load.
        self._waiting: list[tuple[list[qe.Point], asyncio.Future[None]]] = []
        self._upserting = False
        self._upserts: asyncio.Task[None] | None = None

    @property
    def shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise RuntimeError("history store is not open")
        return self._shard

    async def open(self, dimension: int) -> None:
        self._shard, found = await self._write(lambda: self._open_sync(dimension))
        await migrate_index(self, found, self._where, self._instead, self._save_version)

    def staged(self, key: str) -> EdgeStore:
        """The index that `confide reindex` builds beside this one (one at a time: `key` is not needed here)."""
        return EdgeStore(self.path.with_name(self.path.name + STAGED_SUFFIX), self.rrf_k)

    async def drop(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self.path, True)

    async def replace_by(self, staged: EdgeStore) -> None:
        """Put a complete staged index (both closed) in this one's place: the old folder is moved aside, the staged
        one moved in, then the old one removed. A stop between the two moves is finished by the next open."""

        def move() -> None:
            aside = self.path.with_name(self.path.name + REPLACED_SUFFIX)
            if aside.exists():
                shutil.rmtree(aside)
            if self.path.exists():
                os.replace(self.path, aside)
            os.replace(staged.path, self.path)
            shutil.rmtree(aside, ignore_errors=True)

        await asyncio.to_thread(move)

    def _finish_replacing(self) -> None:
        """A replacement stopped between its two moves: the complete staged index (it records its embedder) is
        moved in, and the old one left aside is removed."""
        staged = self.path.with_name(self.path.name + STAGED_SUFFIX)
        aside = self.path.with_name(self.path.name + REPLACED_SUFFIX)
        if not self.path.exists() and staged.exists() and staged_complete(EdgeStore(staged)._read_version().embedder):
            log.warning("finishing the replacement of %s by the index confide reindex built", self.path)
            os.replace(staged, self.path)
        if aside.exists() and self.path.exists():
            shutil.rmtree(aside)

    def _open_sync(self, dimension: int) -> tuple[qe.EdgeShard, int]:
        self._finish_replacing()
        if self.path.exists() and any(self.path.iterdir()):
            found, self._embedder, vectors = self._read_version()
            refuse_newer(found, self._where, self._instead)
            shard = self._load(dimension, vectors)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            shard = qe.EdgeShard.create(str(self.path), _config(dimension, self._stored_as))
            found = index_version()
            self._write_version(found)
        schema = shard.info().payload_schema
        for key in INDEXED_KEYWORDS:
            if key not in schema:
                params = qe.KeywordIndexParams(is_tenant=True) if key == "person" else qe.KeywordIndexParams()
                shard.update(qe.UpdateOperation.create_field_index(key, params))
        if "ts" not in schema:
            shard.update(qe.UpdateOperation.create_field_index("ts", qe.PayloadSchemaType.Float))
        return shard, found

    def _read_version(self) -> _Recorded:
        file = self.path / VERSION_FILE
        try:
            recorded = json.loads(file.read_text(encoding="utf-8"))
            embedder = recorded.get("embedder")
            if embedder is not None and not isinstance(embedder, dict):
                raise TypeError("its embedder is not an object")
            version, vectors = int(recorded["version"]), recorded.get("vectors")
        except FileNotFoundError:
            return _Recorded(UNVERSIONED, None, None)
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; AttributeError: JSON that is not an object.
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IndexDamaged(
                f"{file} is damaged ({type(exc).__name__}: {exc}); it records which version of Confide's index "
                f"format the folder holds. If this Confide made the index, write it again:  printf "
                f"'{{\"version\": {index_version()}}}' > {file}  ; otherwise {self._instead} Nothing was changed."
            ) from None
        if vectors is not None and vectors not in DATATYPES:
            raise IndexDamaged(f"{file} names an unknown vector type {vectors!r}. {self._instead}")
        return _Recorded(version, embedder, None if vectors is None else str(vectors))

    def _load(self, dimension: int, recorded: str | None) -> qe.EdgeShard:
        """The shard as it is stored: float16 or float32 vectors, as its version file says (`recorded`); where it
        says none (an index from before, or a version file written again by hand), float32 and then float16 are
        tried."""
        tried = [recorded] if recorded else [OLD_VECTORS, NEW_VECTORS]
        for datatype in tried:
            try:
                shard = qe.EdgeShard.load(str(self.path), _config(dimension, datatype))
            except BaseException as exc:  # qdrant-edge raises bare Exceptions, and a Rust panic is a BaseException
                if isinstance(exc, KeyboardInterrupt | SystemExit | MemoryError):
                    raise
                message = str(exc).lower()
                if "incompatible" not in message:
                    raise IndexDamaged(
                        f"the index at {self.path} cannot be opened: a file in it is damaged ({exc}). Nothing was "
                        f"changed. Restore that folder from a backup, or {self._instead}"
                    ) from None
                if "datatype" in message and datatype != tried[-1]:
                    continue
                raise IndexIncompatible(
                    f"the index at {self.path} was built by another version of Confide ({exc}). Nothing was "
                    "changed. Move that folder away and import your history again."
                ) from None
            self._stored_as = datatype
            return shard
        raise AssertionError("unreachable: the last datatype tried returns or raises")

    def _write_version(self, version: int) -> None:
        # Atomically (temp file, fsync, rename): a crash leaves the old version or the new one.
        temporary = self.path / (VERSION_FILE + ".tmp")
        recorded = {"version": version, **({"embedder": self._embedder} if self._embedder else {})}
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump({**recorded, "vectors": self._stored_as}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path / VERSION_FILE)

    async def _save_version(self, version: int) -> None:
        def save() -> None:
            self.shard.flush()  # whatever the migration changed is on disk before the version that says so
            self._write_version(version)

        await self._write(save)

    async def recorded_embedder(self) -> dict[str, Any] | None:
        """Read from the folder itself (also before `open`): None for no index yet, {} for one that records none."""
        await asyncio.to_thread(self._finish_replacing)
        if not (self.path.exists() and any(self.path.iterdir())):
            return None
        return await asyncio.to_thread(lambda: self._read_version().embedder or {})

    async def record_embedder(self, embedder: dict[str, Any]) -> None:
        def save() -> None:
            self.shard.flush()
            self._embedder = embedder
            self._write_version(self._read_version().version)

        await self._write(save)

    async def persons(self) -> list[str]:
        request = qe.FacetRequest("person", limit=1_000_000, exact=True)
        response = await asyncio.to_thread(self.shard.facet, request)
        return sorted(str(hit.value) for hit in response.hits)

    async def upsert(self, person: str, items: Sequence[Vectorized]) -> int:
        if not items:
            return 0
        points = [
            qe.Point(
                id=point_id(person, item.record.id),
                vector={
                    **{name: list(item.dense[name]) for name in DENSE_VECTORS},
                    **{
                        name: qe.SparseVector(indices=item.sparse[name].indices, values=item.sparse[name].values)
                        for name in SPARSE_VECTORS
                    },
                },
                payload=to_payload(person, item.record),
            )
            for item in items
        ]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((points, done))
        if not self._upserting:
            self._upserting = True
            self._upserts = asyncio.create_task(self._upsert_waiting(), name="confide-edge-upserts")
        await done
        return len(points)

    async def _upsert_waiting(self) -> None:
        """Write every waiting upsert in one shard update, until none waits; each caller learns the outcome."""
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                points = [point for points, _ in group for point in points]
                try:
                    await self._write(lambda points=points: self.shard.update(qe.UpdateOperation.upsert_points(points)))
                except Exception as exc:
                    for _, done in group:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for _, done in group:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._upserting = False

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
        prefetches = [
            qe.Prefetch(limit=candidates, query=qe.Query.Nearest(list(vector), using=name), filter=narrow[ranked](part))
            for vector, ranked in dense_plan(dense, language, across, alike)
            for part in wheres
            for name in DENSE_VECTORS
        ]
        if sparse.indices:
            sparse_query = qe.SparseVector(indices=sparse.indices, values=sparse.values)
            prefetches += [
                qe.Prefetch(
                    limit=candidates,
                    query=qe.Query.Nearest(sparse_query, using=name),
                    filter=_in_language(part, sparse.language),
                )
                for part in wheres
                for name in SPARSE_VECTORS
            ]
        request = qe.QueryRequest(
            limit=limit,
            # qdrant-edge's stub declares Rrf beside Fusion; at run time it is one of Fusion's variants.
            query=cast(qe.Fusion, qe.Fusion.Rrf(k=self.rrf_k)),
            prefetches=prefetches,
            filter=where,
            with_payload=True,
        )
        points = await asyncio.to_thread(self.shard.query, request)
        return [Hit(from_payload(p.payload or {}), p.score) for p in points]

    async def authors(self, person: str) -> set[str]:
        request = qe.FacetRequest("author", limit=MAX_AUTHORS, exact=False, filter=_filter(person, None))
        response = await asyncio.to_thread(self.shard.facet, request)
        return {str(hit.value) for hit in response.hits}

    async def closeness(self, person: str, dense: list[float], record_ids: Sequence[str]) -> dict[str, float]:
        if not record_ids:
            return {}
        by_point = {point_id(person, rid): rid for rid in record_ids}
        where = _filter(person, None, by_point)
        requests = [
            qe.QueryRequest(limit=len(by_point), query=qe.Query.Nearest(list(dense), using=name), filter=where)
            for name in DENSE_VECTORS
        ]
        found = await asyncio.to_thread(self.shard.query_batch, qe.QueryBatchRequest(requests))
        return nearest_of(by_point, ((str(p.id), p.score) for points in found for p in points))

    async def existing(self, person: str, record_ids: Sequence[str]) -> set[str]:
        if not record_ids:
            return set()
        by_point = {point_id(person, rid): rid for rid in record_ids}
        found = await asyncio.to_thread(self.shard.retrieve, list(by_point), False, False)
        return {by_point[str(r.id)] for r in found}

    async def delete(self, person: str, selector: Selector) -> int:
        check_deletable(selector)
        where = _filter(person, selector)

        def run() -> int:
            count = self.shard.count(qe.CountRequest(exact=True, filter=where))
            if count:
                self.shard.update(qe.UpdateOperation.delete_points_by_filter(where))
            return count

        return await self._write(run)

    async def count(self, person: str, selector: Selector | None = None) -> int:
        where = _filter(person, selector)
        return await asyncio.to_thread(self.shard.count, qe.CountRequest(exact=True, filter=where))

    async def export(self, person: str) -> AsyncIterator[Any]:
        async for _, record in self._scroll(_filter(person, None)):
            yield record

    async def by_author(self, author: str) -> AsyncIterator[tuple[str, HistoryRecord]]:
        """Every person's records by `author`, with their point ids: for index migrations only."""
        async for found in self._scroll(qe.Filter(must=[qe.FieldCondition(key="author", match=qe.MatchValue(author))])):
            yield found

    async def _scroll(self, where: qe.Filter) -> AsyncIterator[tuple[str, HistoryRecord]]:
        offset: Any = None
        while True:
            request = qe.ScrollRequest(offset=offset, limit=256, filter=where, with_payload=True)
            records, offset = await asyncio.to_thread(self.shard.scroll, request)
            for record in records:
                yield str(record.id), from_payload(record.payload or {})
            if offset is None:
                return

    async def delete_points(self, point_ids: Sequence[str]) -> int:
        """Delete these points, whoever's they are: for index migrations only."""
        if not point_ids:
            return 0
        ids: list[int | uuid.UUID | str] = list(point_ids)
        await self._write(lambda: self.shard.update(qe.UpdateOperation.delete_points(ids)))
        return len(ids)

    async def close(self) -> None:
        if self._upserts is not None:  # upserts already accepted are written before the shard closes
            await asyncio.gather(self._upserts, return_exceptions=True)
        if self._shard is not None:
            shard, self._shard = self._shard, None

            def close() -> None:
                shard.flush()
                shard.close()

            await self._write(close)
        self._writer.shutdown(wait=True)

    async def _write(self, fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)
