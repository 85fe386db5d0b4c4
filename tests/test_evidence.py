"""Evidence is what people wrote, never what Confide said: answers are not indexed, and a question asked of
Confide before is no evidence for an answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bridge.answering.answer import UNSUPPORTED, asked_before
from bridge.config import RetrievalSettings
from bridge.history.index import HistoryIndex
from bridge.history.store.edge import EdgeStore
from bridge.messages import HistoryRecord
from bridge.models.embedder import LocalEmbedder
from tests.fakes.openai_server import FakeOpenAI, retrieved_history
from tests.harness import Harness
from tests.helpers import eventually, model_for

WHEN = datetime(2025, 8, 1, 9, 0, tzinfo=UTC)
INVENTED = "The wifi password at the cabin is 2026-11-30. [1]"


def note(text: str) -> HistoryRecord:
    return HistoryRecord(id="note-1", person="alice", channel="files", conversation="cabin.md", author="",
                         time=WHEN, text=text, source="files:cabin.md")  # fmt: skip


async def test_answers_are_never_indexed_and_an_earlier_asking_is_no_source(
    history: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    await history.add("alice", [note("Cabin notes: the wifi password is pine-cone-1987.")])
    fake_llm.answer = lambda messages: INVENTED
    question = "What is the wifi password at the cabin?"
    async with harness_factory({"main": model_for(fake_llm)}, retrieval=RetrievalSettings()) as h:
        await h.adapter.send("100", question)
        await eventually(lambda: len(h.adapter.delivered) == 1)
        await h.adapter.send("100", question + " ")
        await eventually(lambda: len(h.adapter.delivered) == 2)

    stored = [r async for r in history.export("alice")]
    assert not [r for r in stored if "2026-11-30" in r.text], "Confide's own answer became history"
    asked = [r for r in stored if r.source.startswith("confide:")]
    assert len(asked) == 2 and {r.text.strip() for r in asked} == {question}, "the person's questions stay"

    excerpts = retrieved_history(fake_llm.requests[1])
    assert "pine-cone-1987" in excerpts
    assert question not in excerpts, "the question asked before was given as evidence for itself"
    assert "2026-11-30" not in excerpts
    # the invented password is in no excerpt: the answer cites nothing, and says so
    assert h.adapter.delivered[1].citations == []
    assert h.adapter.delivered[1].text.endswith(UNSUPPORTED)


def test_questions_put_to_confide_are_left_out_and_what_people_told_it_stays() -> None:
    def record(text: str, source: str) -> HistoryRecord:
        return HistoryRecord(id="q:telegram:1", person="alice", channel="telegram", conversation="c", author="me",
                             time=WHEN, text=text, source=source)  # fmt: skip

    question = "What is the wifi password at the cabin?"
    assert asked_before(record("what is the WIFI password at the cabin", "confide:telegram:100"), question)
    assert not asked_before(record("My locker code is 4711, remember it", "confide:telegram:100"), question)
    # Another question asked of Confide shares the words but holds no answer: a small model cited it instead of
    # the note ("you asked about the cabin wifi before [2]").
    assert asked_before(record("and the cabin wifi, what was its password again? ", "confide:telegram:100"), question)
    assert not asked_before(record("Who has the wifi password at the cabin?", "whatsapp:family.zip"), question)
    assert not asked_before(record(question, "whatsapp:family.zip"), question), "a chat's own line is evidence"


async def test_a_question_is_stored_with_the_vector_its_search_just_computed(
    tmp_path: Path, embedder: LocalEmbedder
) -> None:
    """The CPU encoder limits the live bridge: asking and then indexing a question embeds it once, not three times."""
    texts: list[str] = []

    class Counting:
        dimension = embedder.dimension

        async def open(self) -> None: ...
        async def close(self) -> None: ...

        async def embed_documents(self, batch: Sequence[str]) -> list[list[float]]:
            texts.extend(batch)
            return await embedder.embed_documents(batch)

        async def embed_query(self, text: str) -> list[float]:
            texts.append(text)
            return await embedder.embed_query(text)

        def halves(self, query: list[float]) -> tuple[list[float], list[float]] | None:
            return embedder.halves(query)

    store = EdgeStore(tmp_path / "shard")
    await store.open(embedder.dimension)
    history = HistoryIndex(store, Counting())
    try:
        question = "Which bakery sells the rye bread with caraway?"
        await history.search("alice", question, limit=3)
        asked = HistoryRecord(id="q:telegram:1", person="alice", channel="telegram", conversation="Confide chat",
                              author="me", time=WHEN, text=question, source="confide:telegram:100")  # fmt: skip
        await history.add_asked("alice", asked)
        assert texts == [question]
        hits = await history.search("alice", "rye bread caraway bakery", limit=3)
        assert [h.record.id for h in hits] == ["q:telegram:1"]
    finally:
        await store.close()


async def test_nothing_found_is_no_turn_the_model_is_shown_later(
    history: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    """Asked before the note was imported, the gate said "nothing found"; asked after, the model must not be
    shown that reply as an earlier turn (a small model repeats it, although the note is in its excerpts)."""
    question = "What is the wifi password at the cabin?"
    async with harness_factory({"main": model_for(fake_llm)}, retrieval=RetrievalSettings()) as h:
        await h.adapter.send("100", question)
        await eventually(lambda: len(h.adapter.delivered) == 1)
        assert h.adapter.delivered[0].text.startswith("I found nothing in your history about")
        await history.add("alice", [note("Cabin notes: the wifi password is pine-cone-1987.")])
        await h.adapter.send("100", question)
        await eventually(lambda: len(h.adapter.delivered) == 2)
    [request] = fake_llm.requests
    shown = "\n".join(m["content"] for m in request["messages"])
    assert "pine-cone-1987" in shown and "I found nothing" not in shown
