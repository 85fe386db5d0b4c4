"""An index knows its embedder, and `confide reindex` brings a history over to another (issue 22).

Both backends: the embedded shard, and the server's API on qdrant-client's local mode (no Qdrant server runs
here). The second embedder is the packaged model under another name: its vectors are the same, which is beside
the point; what is tested is that an index answers only to the embedder it records, and that a reindex, stopped
and resumed, ends with every record re-embedded and nothing lost.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from bridge.history import reindex as reindexing
from bridge.history.index import HistoryIndex, IndexBuiltByAnother
from bridge.history.reindex import ReindexProgress, reindex_store
from bridge.history.store import HistoryStore
from bridge.history.store.edge import EdgeStore
from bridge.history.store.server import ServerStore
from bridge.messages import HistoryRecord, Neighbours
from bridge.models.embedder import LEGACY_EMBEDDER, LocalEmbedder, packaged_model_path
from bridge.models.encoders import onnx_file_for

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
async def other(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalEmbedder]:
    """The packaged model copied into a folder of another name, with its ONNX export: another embedder."""
    folder = tmp_path_factory.mktemp("models") / "other-model"
    shutil.copytree(packaged_model_path(), folder)
    (folder / "onnx").mkdir()
    shutil.copy(onnx_file_for(packaged_model_path(), packaged=True), folder / "onnx" / "model.onnx")
    model = LocalEmbedder(folder)
    await model.open()
    yield model
    await model.close()


class Backend:
    def __init__(self, kind: str, root: Path) -> None:
        self.kind, self.root = kind, root
        self.client = AsyncQdrantClient(path=str(root / "server")) if kind == "server" else None

    def store(self) -> HistoryStore:
        if self.client is not None:
            return ServerStore(self.client, "history", owns_client=False)
        return EdgeStore(self.root / "qdrant")


@pytest.fixture(params=["embedded", "server"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    place = Backend(request.param, tmp_path)
    yield place
    if place.client is not None:
        await place.client.close()


def records(person: str, count: int) -> list[HistoryRecord]:
    return [
        HistoryRecord(
            id=f"{person}-{i}", person=person, channel="whatsapp", conversation="Family", author="Anna",
            time=T0 + timedelta(minutes=i), text=f"note {i}: the boat key is in drawer {i}", source="whatsapp:f.zip",
            neighbours=Neighbours(before=[f"Ben: line {i - 1}"], prev=f"{person}-{i - 1}" if i else None),
        )
        for i in range(count)
    ]  # fmt: skip


async def opened(store: HistoryStore, embedder: LocalEmbedder) -> HistoryIndex:
    history = HistoryIndex(store, embedder)
    history.embedder = embedder  # already open (shared): HistoryIndex.open opens it again harmlessly
    await history.open()
    return history


async def test_an_index_answers_only_to_its_embedder_and_a_stopped_reindex_resumes(
    backend: Backend, embedder: LocalEmbedder, other: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = await opened(backend.store(), embedder)
    assert await history.add("alice", records("alice", 7)) == 7
    assert await history.add("bob", records("bob", 3)) == 3
    await history.store.close()

    with pytest.raises(IndexBuiltByAnother, match=r"all-MiniLM-L6-v2 \+ multilingual-USE-v3 .* other-model .*reindex"):
        await opened(backend.store(), other)

    monkeypatch.setattr(reindexing, "BATCH", 2)
    seen: list[ReindexProgress] = []

    def stop_after_two_batches(now: ReindexProgress) -> None:
        seen.append(now)
        if len(seen) == 2:
            raise KeyboardInterrupt  # as Ctrl-C stops it

    with pytest.raises(KeyboardInterrupt):
        await reindex_store(backend.store(), other, stop_after_two_batches)
    history = await opened(backend.store(), embedder)  # the old index is as it was, and still its embedder's
    assert await history.count("alice") == 7 and await history.count("bob") == 3
    await history.store.close()

    summary = await reindex_store(backend.store(), other)
    assert (summary.built_by, summary.now) == (embedder.identity, other.identity)
    assert (summary.records, summary.embedded) == (10, 6)  # the first run's two batches were kept
    history = await opened(backend.store(), other)
    try:
        moved = {r.id: r async for r in history.export("alice")}
        assert sorted(moved) == sorted(r.id for r in records("alice", 7))
        assert moved["alice-3"].neighbours == Neighbours(before=["Ben: line 2"], prev="alice-2")
        assert moved["alice-3"].language == "en"  # told when it was re-indexed
        hits = await history.search("bob", "where is the boat key? drawer 2", limit=3)
        assert sorted(h.record.id for h in hits) == ["bob-0", "bob-1", "bob-2"]  # searched by the new embedder
        assert await history.store.recorded_embedder() == other.identity.as_dict()
    finally:
        await history.store.close()
    again = await reindex_store(backend.store(), other)
    assert again.records == 0 and "already built" in again.describe()
    if backend.kind == "embedded":
        assert sorted(p.name for p in backend.root.iterdir()) == ["qdrant"]  # nothing staged or set aside is left


@pytest.fixture(scope="module")
async def minilm() -> AsyncIterator[LocalEmbedder]:
    """The packaged all-MiniLM-L6-v2 alone: what built every index before indexes recorded their embedder."""
    model = LocalEmbedder(packaged="minilm")
    await model.open()
    yield model
    await model.close()


async def test_an_index_from_before_embedders_were_recorded_is_the_packaged_models(
    tmp_path: Path, minilm: LocalEmbedder, other: LocalEmbedder
) -> None:
    embedder = minilm
    store = EdgeStore(tmp_path / "qdrant")
    await store.open(embedder.dimension)
    await HistoryIndex(store, embedder).add("alice", records("alice", 2))
    await store.close()
    version = tmp_path / "qdrant" / "confide-index.json"
    version.write_text('{"version": 2}')  # as every index was written before
    assert embedder.identity == LEGACY_EMBEDDER
    history = await opened(EdgeStore(tmp_path / "qdrant"), embedder)
    assert await history.count("alice") == 2
    await history.store.close()
    assert '"embedder"' in version.read_text()  # recorded from now on
    version.write_text('{"version": 2}')
    with pytest.raises(IndexBuiltByAnother):
        await opened(EdgeStore(tmp_path / "qdrant"), other)


async def test_a_replacement_stopped_between_its_moves_is_finished_at_the_next_open(
    tmp_path: Path, embedder: LocalEmbedder
) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    history = await opened(store, embedder)
    await history.add("alice", records("alice", 2))
    await store.close()
    (tmp_path / "qdrant").rename(tmp_path / "qdrant.reindex")  # the old one moved aside and gone, the new not in
    history = await opened(EdgeStore(tmp_path / "qdrant"), embedder)
    assert await history.count("alice") == 2
    await history.store.close()


async def test_a_reindex_begun_for_another_model_is_started_afresh(
    tmp_path: Path,
    embedder: LocalEmbedder,
    other: LocalEmbedder,
    minilm: LocalEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history = await opened(EdgeStore(tmp_path / "qdrant"), embedder)
    await history.add("alice", records("alice", 5))
    await history.store.close()
    monkeypatch.setattr(reindexing, "BATCH", 2)

    def stop(now: ReindexProgress) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await reindex_store(EdgeStore(tmp_path / "qdrant"), other, stop)  # begun for other-model (384 dims)
    summary = await reindex_store(EdgeStore(tmp_path / "qdrant"), minilm)  # then the configuration changed
    assert (summary.records, summary.embedded) == (5, 5)  # nothing of the other model's was kept
    history = await opened(EdgeStore(tmp_path / "qdrant"), minilm)
    assert await history.count("alice") == 5
    await history.store.close()
