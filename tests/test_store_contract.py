"""One contract, two backends: embedded qdrant-edge and qdrant-client (local mode, same API as a server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qmodels

import bridge.history.store
from bridge.config import StoreSettings
from bridge.history.index import HistoryIndex, message_text
from bridge.history.store import HistoryStore, IndexIncompatible, PersonMismatch, Selector, edge, server
from bridge.history.store.edge import EdgeStore
from bridge.history.store.server import ServerStore
from bridge.messages import HistoryRecord
from bridge.models.embedder import LocalEmbedder

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def record(person: str, rid: str, text: str, days: int = 0, source: str = "notes", **extra: str) -> HistoryRecord:
    return HistoryRecord(
        id=rid,
        person=person,
        channel=extra.get("channel", "whatsapp"),
        conversation=extra.get("conversation", "Family"),
        author=extra.get("author", "Anna"),
        time=T0 + timedelta(days=days),
        text=text,
        source=source,
    )


# A Qdrant cluster's layout (bridge/history/store/cluster.py): int8 vectors searched with rescoring, one graph per
# person. qdrant-client's local mode takes it and searches exactly; that the layout reaches a server is
# tests/test_qdrant_cluster.py's.
CLUSTER = StoreSettings(shard_number=2, replication_factor=2, write_consistency_factor=1, on_disk_vectors=True,
                        quantization="int8", tenant_graphs=True)  # fmt: skip


@pytest.fixture(params=["embedded", "server", "cluster"])
async def index(request: pytest.FixtureRequest, tmp_path: Path, embedder: LocalEmbedder) -> AsyncIterator[HistoryIndex]:
    if request.param == "embedded":
        store = EdgeStore(tmp_path / "shard")
    else:
        layout = CLUSTER if request.param == "cluster" else None
        store = ServerStore(AsyncQdrantClient(location=":memory:"), "history", layout=layout)
    history = HistoryIndex(store, embedder)
    await store.open(embedder.dimension)
    yield history
    await store.close()


async def test_finds_by_meaning_and_by_rare_term(index: HistoryIndex) -> None:
    await index.add("alice", [
        record("alice", "1", "The plumber comes on Thursday morning to fix the kitchen sink."),
        record("alice", "2", "Our flight to Lisbon leaves at 7:40 from gate B12.", days=1),
        record("alice", "3", "Remember to water the tomatoes while we are away.", days=2),
        record("alice", "4", "Invoice number XK-99817 was paid in full.", days=3),
    ])  # fmt: skip
    by_meaning = await index.search("alice", "When does the airplane to Portugal depart?", limit=2)
    assert by_meaning[0].record.id == "2"
    by_term = await index.search("alice", "XK-99817", limit=2)
    assert by_term[0].record.id == "4"
    assert by_meaning[0].record.source == "notes" and by_meaning[0].record.author == "Anna"


async def test_upserts_of_many_chats_at_once_all_land_each_in_its_own_persons_history(index: HistoryIndex) -> None:
    """The live bridge indexes each chat's question alone, many at once (the embedded store writes the waiting
    ones together): every caller's records are there when its call returns, under its own person."""

    async def one(n: int) -> None:
        person = f"p{n % 5}"
        await index.add(person, [record(person, f"q{n}", f"question {n} about the ferry to the island")])
        assert await index.existing(person, [f"q{n}"]) == {f"q{n}"}

    await asyncio.gather(*(one(n) for n in range(60)))
    for person in range(5):
        assert await index.count(f"p{person}") == 12
        everyone = [f"q{n}" for n in range(60)]
        assert await index.existing(f"p{person}", everyone) == {f"q{n}" for n in range(person, 60, 5)}


async def test_upsert_is_idempotent_on_record_id(index: HistoryIndex) -> None:
    first = record("alice", "same", "first version")
    await index.add("alice", [first])
    await index.add("alice", [record("alice", "same", "second version")])
    assert await index.count("alice") == 1
    [only] = [r async for r in index.export("alice")]
    assert only.text == "second version"


async def test_person_isolation_in_every_call(index: HistoryIndex) -> None:
    await index.add("alice", [record("alice", "a1", "Alice's secret: the safe code is 4471")])
    await index.add("bob", [record("bob", "b1", "Bob's note about the safe")])
    hits = await index.search("bob", "safe code 4471", limit=10)
    assert [h.record.person for h in hits] == ["bob"]
    assert [r.id async for r in index.export("bob")] == ["b1"]
    assert await index.count("bob") == 1
    assert await index.forget("bob", Selector(everything=True)) == 1
    assert await index.count("alice") == 1  # Bob forgetting everything leaves Alice untouched


async def test_record_of_another_person_is_refused(index: HistoryIndex) -> None:
    with pytest.raises(PersonMismatch):
        await index.add("bob", [record("alice", "x", "not Bob's")])
    assert await index.count("bob") == 0


async def test_same_source_id_for_two_persons_are_two_records(index: HistoryIndex) -> None:
    await index.add("alice", [record("alice", "msg-1", "hello from alice")])
    await index.add("bob", [record("bob", "msg-1", "hello from bob")])
    assert [r.text async for r in index.export("alice")] == ["hello from alice"]
    assert [r.text async for r in index.export("bob")] == ["hello from bob"]


async def test_forget_by_source_and_by_time(index: HistoryIndex) -> None:
    await index.add("alice", [
        record("alice", "1", "old whatsapp", days=0, source="whatsapp.zip"),
        record("alice", "2", "newer whatsapp", days=10, source="whatsapp.zip"),
        record("alice", "3", "a mail", days=5, source="mail.mbox"),
    ])  # fmt: skip
    assert await index.forget("alice", Selector(source="mail.mbox")) == 1
    assert await index.forget("alice", Selector(until=T0 + timedelta(days=1))) == 1
    assert [r.id async for r in index.export("alice")] == ["2"]


async def test_empty_selector_never_deletes(index: HistoryIndex) -> None:
    await index.add("alice", [record("alice", "1", "keep me")])
    with pytest.raises(ValueError, match="empty selector"):
        await index.forget("alice", Selector())
    assert await index.count("alice") == 1


async def test_search_filters_by_time(index: HistoryIndex) -> None:
    await index.add("alice", [
        record("alice", "jan", "dinner at Marco's", days=0),
        record("alice", "feb", "dinner at Marco's again", days=40),
    ])  # fmt: skip
    hits = await index.search("alice", "dinner", limit=5, selector=Selector(since=T0 + timedelta(days=30)))
    assert [h.record.id for h in hits] == ["feb"]


async def test_export_pages_through_everything(index: HistoryIndex) -> None:
    records = [record("alice", f"r{i}", f"line {i}", days=i % 30) for i in range(600)]
    await index.add("alice", records)
    exported = {r.id async for r in index.export("alice")}
    assert exported == {r.id for r in records}


WORDS = ["safe", "code", "lisbon", "flight", "pizza", "tomato", "invoice", "plumber", "gate", "key"]
texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    alice=st.lists(texts, min_size=0, max_size=6),
    bob=st.lists(texts, min_size=0, max_size=6),
    query=texts,
    asker=st.sampled_from(["alice", "bob"]),
)
async def test_property_no_query_returns_another_persons_record(
    index: HistoryIndex, alice: list[str], bob: list[str], query: str, asker: str
) -> None:
    """Whatever both hold and whatever is asked, a person's search returns only their own records."""
    await index.forget("alice", Selector(everything=True)) if await index.count("alice") else None
    await index.forget("bob", Selector(everything=True)) if await index.count("bob") else None
    await index.add("alice", [record("alice", f"a{i}", t) for i, t in enumerate(alice)])
    await index.add("bob", [record("bob", f"b{i}", t) for i, t in enumerate(bob)])
    hits = await index.search(asker, query, limit=20)
    assert all(h.record.person == asker for h in hits)
    assert len(hits) == len(alice if asker == "alice" else bob)


async def test_a_new_index_stores_half_floats_and_one_from_before_keeps_its_own(
    tmp_path: Path, embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New indexes hold float16 vectors (half the memory); an index of the release before holds float32 and says
    nothing of it: both open, search, and keep what they are."""
    notes = [
        record("alice", "1", "The spare key is under the blue flower pot."),
        record("alice", "2", "Bins go out on Tuesday."),
    ]

    async def used(path: Path) -> str:
        history = HistoryIndex(EdgeStore(path), embedder)
        await history.open()
        try:
            await history.add("alice", notes)
            hits = await history.search("alice", "Where is the spare key?", limit=1)
            assert hits[0].record.id == "1"
        finally:
            await history.store.close()
        return str(json.loads((path / edge.VERSION_FILE).read_text()).get("vectors", "none told"))

    assert await used(tmp_path / "new") == "float16"
    monkeypatch.setattr(edge, "NEW_VECTORS", "float32")  # as the release before made every index
    assert await used(tmp_path / "old") == "float32"
    recorded = json.loads((tmp_path / "old" / edge.VERSION_FILE).read_text())
    del recorded["vectors"]  # the release before wrote no such key
    (tmp_path / "old" / edge.VERSION_FILE).write_text(json.dumps(recorded))
    monkeypatch.undo()
    assert await used(tmp_path / "old") == "none told"  # opened as float32: a float16 config would be refused


async def test_an_index_of_another_version_is_refused_and_left_alone(tmp_path: Path, embedder: LocalEmbedder) -> None:
    import qdrant_edge as qe

    from bridge.history.store import IndexIncompatible

    old = qe.EdgeShard.create(
        str(tmp_path / "old"),
        qe.EdgeConfig(vectors={"dense": qe.EdgeVectorParams(size=embedder.dimension, distance=qe.Distance.Cosine)}),
    )
    old.update(qe.UpdateOperation.upsert_points([qe.Point(id=1, vector={"dense": [0.1] * embedder.dimension})]))
    old.flush()
    old.close()
    store = EdgeStore(tmp_path / "old")
    with pytest.raises(IndexIncompatible, match="another version of Confide"):
        await store.open(embedder.dimension)
    reopened = qe.EdgeShard.load(str(tmp_path / "old"))
    assert reopened.count(qe.CountRequest(exact=True)) == 1  # nothing was changed
    reopened.close()

    client = AsyncQdrantClient(location=":memory:")
    await client.create_collection(
        "history", vectors_config={"dense": qmodels.VectorParams(size=4, distance=qmodels.Distance.COSINE)}
    )
    with pytest.raises(IndexIncompatible, match="needs"):
        await ServerStore(client, "history").open(embedder.dimension)
    await client.close()


async def test_authors_are_listed_per_person(index: HistoryIndex) -> None:
    await index.add("alice", [
        record("alice", "1", "see you at eight", author="Anna Berg"),
        record("alice", "2", "bring the cake", author="Ben"),
        record("alice", "3", "and candles", author="Ben"),
    ])  # fmt: skip
    await index.add("bob", [record("bob", "1", "hello", author="Carl")])
    assert await index.store.authors("alice") == {"Anna Berg", "Ben"}
    assert await index.store.authors("bob") == {"Carl"}
    assert await index.store.authors("nobody") == set()
    assert await index.authors("alice") == {"Anna Berg", "Ben"}  # read once, then kept up to date
    await index.add("alice", [record("alice", "4", "count me in", author="Dora")])
    assert await index.authors("alice") == {"Anna Berg", "Ben", "Dora"}
    await index.forget("alice", Selector(everything=True))
    assert await index.authors("alice") == set()


async def test_a_date_in_the_question_brings_that_time_forward(index: HistoryIndex) -> None:
    """Many dinners match the words; the one on the day asked about comes first, and without the date it
    would not: the date is a hint for ranking, not a filter (the other dinners still come back)."""
    text = "We had dinner at Marco's, lovely evening"
    dinners = [record("alice", f"d{day}", text, days=day) for day in range(0, 60, 7)]
    target = record("alice", "target", "Dinner with the neighbours tonight, they cooked pasta", days=24)
    await index.add("alice", [*dinners, target])
    now = T0 + timedelta(days=90)
    undated = await index.search("alice", "Where did we have dinner?", limit=5, now=now)
    assert undated[0].record.id != "target"
    dated = await index.search("alice", "Where did we have dinner on 25 March 2024?", limit=5, now=now)
    assert dated[0].record.id == "target"
    assert len(dated) == 5
    outside = await index.search(
        "alice", "Where did we have dinner on 25 March 2024?", limit=5, selector=Selector(since=T0 + timedelta(days=30))
    )
    assert "target" not in {h.record.id for h in outside}  # a hint never widens what the selector allows


async def test_an_older_index_gains_the_author_index(tmp_path: Path, embedder: LocalEmbedder) -> None:
    """A shard written before authors were listed has no payload index on `author`; opening adds it."""
    import qdrant_edge as qe

    history = HistoryIndex(EdgeStore(tmp_path / "shard"), embedder)
    await history.store.open(embedder.dimension)
    await history.add("alice", [record("alice", "1", "see you at eight", author="Anna")])
    await history.store.close()
    shard = qe.EdgeShard.load(str(tmp_path / "shard"))
    shard.update(qe.UpdateOperation.delete_field_index("author"))
    assert "author" not in shard.info().payload_schema
    shard.close()

    reopened = EdgeStore(tmp_path / "shard")
    await reopened.open(embedder.dimension)
    assert await reopened.authors("alice") == {"Anna"}
    await reopened.close()


class Place:
    """Where one index lives, reopened by a new store each time, as a restart of Confide would."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind, self.path = kind, tmp_path / "shard"
        self.client = AsyncQdrantClient(location=":memory:")  # the server's stand-in, shared by the stores

    async def open(self, embedder: LocalEmbedder) -> HistoryIndex:
        store: HistoryStore = EdgeStore(self.path) if self.kind == "embedded" else ServerStore(self.client, "history")
        try:
            await store.open(embedder.dimension)
        except BaseException:
            await self.release(store)
            raise
        return HistoryIndex(store, embedder)

    async def release(self, store: HistoryStore) -> None:
        if isinstance(store, EdgeStore):
            await store.close()  # a ServerStore's close would close the shared client

    async def version(self) -> int | None:
        if self.kind == "embedded":
            path = self.path / edge.VERSION_FILE
            return int(json.loads(path.read_text())["version"]) if path.exists() else None
        metadata = (await self.client.get_collection("history")).config.metadata or {}
        return metadata.get(server.VERSION_KEY)

    async def set_version(self, version: int | None) -> None:
        """None: as an index written before versions were recorded."""
        if self.kind == "server":
            await self.client.update_collection("history", metadata={server.VERSION_KEY: version})
        elif version is None:
            (self.path / edge.VERSION_FILE).unlink()
        else:
            (self.path / edge.VERSION_FILE).write_text(json.dumps({"version": version}))


@pytest.fixture(params=["embedded", "server"])
async def place(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Place]:
    where = Place(request.param, tmp_path)
    yield where
    await where.client.close()


async def test_a_new_index_records_the_version_it_was_created_in(
    place: Place, embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = await place.open(embedder)
    assert await place.version() == bridge.history.store.index_version() == 2
    await place.release(history.store)

    ran: list[int] = []

    async def never(store: HistoryStore) -> None:
        ran.append(3)

    monkeypatch.setattr(bridge.history.store, "INDEX_MIGRATIONS", [*bridge.history.store.INDEX_MIGRATIONS, (3, never)])
    other = Place(place.kind, place.path.parent / "other")
    history = await other.open(embedder)
    assert await other.version() == 3 and ran == []  # created in the newest layout: nothing to migrate
    await other.release(history.store)
    await other.client.close()


async def test_an_unversioned_index_is_version_1_and_is_migrated_once(
    place: Place, embedder: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = await place.open(embedder)
    await history.add("alice", [
        record("alice", "1", "The boiler was fixed on Tuesday."),
        record("alice", "2", "You asked about the boiler.", author="Confide", source="confide:telegram"),
    ])  # fmt: skip
    await place.release(history.store)
    await place.set_version(None)
    monkeypatch.setattr(bridge.history.store, "INDEX_MIGRATIONS", [])
    history = await place.open(embedder)  # unversioned, and no migration known: opens as it is
    assert await history.count("alice") == 2 and await place.version() is None
    await place.release(history.store)

    ran: list[str] = []

    async def migration(store: HistoryStore) -> None:  # the kind of change one makes: Confide's answers go
        ran.append(place.kind)
        await store.delete("alice", Selector(source="confide:telegram"))

    monkeypatch.setattr(bridge.history.store, "INDEX_MIGRATIONS", [(2, migration)])
    history = await place.open(embedder)
    assert await place.version() == 2 and ran == [place.kind]
    assert [r.id async for r in history.export("alice")] == ["1"]
    hits = await history.search("alice", "When was the boiler fixed?", limit=5)
    assert [h.record.id for h in hits] == ["1"]
    await place.release(history.store)
    history = await place.open(embedder)
    assert ran == [place.kind]  # applied once
    await place.release(history.store)


async def test_an_index_of_a_newer_version_is_refused_and_left_alone(place: Place, embedder: LocalEmbedder) -> None:
    history = await place.open(embedder)
    await history.add("alice", [record("alice", "1", "keep me")])
    await place.release(history.store)
    await place.set_version(9)
    with pytest.raises(
        IndexIncompatible, match=r"newer version of Confide \(index version 9, this version knows 2\)"
    ) as refused:
        await place.open(embedder)
    message = str(refused.value)
    assert "Nothing was changed" in message and "confide import KIND PATH --person ID" in message
    assert ("CONFIDE_STORE__COLLECTION" if place.kind == "server" else f"mv {place.path}") in message
    assert await place.version() == 9
    await place.set_version(2)
    history = await place.open(embedder)
    assert await history.count("alice") == 1
    await place.release(history.store)


async def test_index_version_2_removes_confides_answers_from_every_persons_history(
    place: Place, embedder: LocalEmbedder
) -> None:
    """An index written while Confide indexed its own answers: they go, the persons' own words stay."""
    history = await place.open(embedder)
    for person in ("alice", "bob"):
        await history.add(person, [
            record(person, "q:telegram:7", "What is the wifi password at the cabin?", author="me",
                   source="confide:telegram:100"),
            record(person, "a:telegram:7", "The wifi password at the cabin is 2026-11-30.", author="Confide",
                   source="confide:telegram:100"),
            record(person, "n1", "The wifi password at the cabin is pine-cone-1987.", author="Confide"),
        ])  # fmt: skip
    await place.release(history.store)
    await place.set_version(None)  # as written before versions were recorded

    history = await place.open(embedder)
    assert await place.version() == 2
    for person in ("alice", "bob"):
        assert sorted([r.id async for r in history.export(person)]) == ["n1", "q:telegram:7"]
        hits = await history.search(person, "wifi password cabin", limit=5)
        assert "2026-11-30" not in " ".join(h.record.text for h in hits)
    await place.release(history.store)


async def test_closeness_is_the_cosine_of_the_persons_own_records(index: HistoryIndex) -> None:
    """The relevance gate's measure: absolute (a cosine, unlike fused ranks), and per person like every call."""
    wifi = record("alice", "1", "The wifi password at the cabin is pine-cone-1987.")
    await index.add("alice", [wifi, record("alice", "2", "Remember to water the tomatoes while we are away.")])
    await index.add("bob", [record("bob", "1", "Bob's boat is moored at pier 4.")])
    query = await index.embedder.embed_query("wifi password cabin")

    close = await index.store.closeness("alice", query, ["1", "2", "not-there"])
    assert set(close) == {"1", "2"} and 1.0 >= close["1"] > 0.5 > close["2"] >= -1.0
    [alone] = await index.embedder.embed_documents([message_text(wifi)])
    cosine = sum(a * b for a, b in zip(query, alone, strict=True))
    assert close["1"] >= cosine - 1e-3  # the nearer of the record's vectors, alone or in context

    bobs = await index.store.closeness("bob", query, ["1", "2"])
    assert set(bobs) == {"1"} and bobs["1"] < 0.5  # Bob's record "1", never Alice's
    assert await index.store.closeness("alice", query, []) == {}
