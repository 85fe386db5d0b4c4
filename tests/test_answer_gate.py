"""The relevance gate: a history that holds nothing about the question gets a plain "nothing found", and the
model is never asked (given unrelated excerpts, it would invent an answer)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from bridge.answering.answer import AnswerPipeline, key_terms
from bridge.config import RetrievalSettings
from bridge.history.index import NO_RELEVANCE, HistoryIndex
from bridge.messages import HistoryRecord
from bridge.models.embedder import calibrated_gates
from bridge.models.llm import ModelClient
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import Harness
from tests.helpers import eventually, model_for

WHEN = datetime(2024, 5, 3, 18, 30, tzinfo=UTC)
QUESTION = "What is the wifi password at the cabin?"


def note(rid: str, text: str, person: str = "alice", **fields: str) -> HistoryRecord:
    values = {"channel": "files", "conversation": "notes/cabin.md", "author": "Alice", "source": "files:notes"}
    values.update(fields)
    return HistoryRecord(id=rid, person=person, time=WHEN, text=text, link=f"note-{rid}", **values)


IRRELEVANT = [
    note("t", "Remember to water the tomatoes twice a week while we are away."),
    note("p", "The plumber comes on Thursday morning to fix the kitchen sink."),
    note("b", "Book club meets at Sara's place; this month we read Middlemarch."),
]


@pytest.fixture
async def pipeline(history: HistoryIndex, fake_llm: FakeOpenAI) -> AsyncIterator[AnswerPipeline]:
    models = ModelClient({"main": model_for(fake_llm)})
    yield AnswerPipeline(history, models)
    await models.close()


async def test_an_empty_history_is_told_so_and_the_model_is_not_asked(
    history: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    async with harness_factory({"main": model_for(fake_llm)}, retrieval=RetrievalSettings()) as h:
        await h.adapter.send("100", QUESTION)
        await eventually(lambda: h.adapter.delivered)
    [reply] = h.adapter.delivered
    assert "I found nothing in your history about “wifi password cabin”." in reply.text
    assert reply.citations == []
    assert fake_llm.requests == []


async def test_a_relevant_note_is_answered_by_the_model_and_cited(
    history: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    await history.add("alice", [*IRRELEVANT, note("w", "The wifi password at the cabin is pine-cone-1987.")])
    async with harness_factory({"main": model_for(fake_llm)}, retrieval=RetrievalSettings()) as h:
        await h.adapter.send("100", QUESTION)
        await eventually(lambda: h.adapter.delivered)
    [reply] = h.adapter.delivered
    assert "found nothing" not in reply.text
    assert len(fake_llm.requests) == 1
    assert reply.citations[0].excerpt == "The wifi password at the cabin is pine-cone-1987."


async def test_an_irrelevant_history_abstains(
    history: HistoryIndex, pipeline: AnswerPipeline, fake_llm: FakeOpenAI
) -> None:
    await history.add("alice", IRRELEVANT)
    answer = await pipeline.answer("alice", "Alice", QUESTION, "main", [])
    assert answer.abstained and not answer.fallback
    assert answer.text == "I found nothing in your history about “wifi password cabin”."
    assert answer.citations == [] and answer.usage is None
    assert fake_llm.requests == []


async def test_another_persons_note_does_not_count(
    history: HistoryIndex, pipeline: AnswerPipeline, fake_llm: FakeOpenAI
) -> None:
    await history.add("bob", [note("w", "The wifi password at the cabin is pine-cone-1987.", person="bob")])
    await history.add("alice", IRRELEVANT)
    answer = await pipeline.answer("alice", "Alice", QUESTION, "main", [])
    assert answer.abstained and fake_llm.requests == []


async def test_an_earlier_asking_of_the_question_is_no_evidence(
    history: HistoryIndex, pipeline: AnswerPipeline, fake_llm: FakeOpenAI
) -> None:
    """The person's own earlier question matches itself perfectly, and still says nothing about the answer."""
    asked = note("q:telegram:1", QUESTION, channel="telegram", conversation="Confide chat (telegram)", author="me",
                 source="confide:telegram:100")  # fmt: skip
    await history.add("alice", [asked, *IRRELEVANT])
    answer = await pipeline.answer("alice", "Alice", QUESTION, "main", [])
    assert answer.abstained and fake_llm.requests == []


async def test_compare_abstains_for_every_model_without_asking_any(
    history: HistoryIndex, pipeline: AnswerPipeline, fake_llm: FakeOpenAI
) -> None:
    answers = await pipeline.compare("alice", "Alice", QUESTION, ["main", "main"], [])
    assert [a.abstained for a in answers] == [True, True]
    assert fake_llm.requests == []


async def test_a_threshold_of_0_turns_the_gate_off(
    history: HistoryIndex, pipeline: AnswerPipeline, fake_llm: FakeOpenAI
) -> None:
    history.min_relevance = 0
    answer = await pipeline.answer("alice", "Alice", QUESTION, "main", [])
    assert not answer.abstained and len(fake_llm.requests) == 1


async def test_relevance_is_the_best_hits_cosine_to_the_whole_question(history: HistoryIndex) -> None:
    await history.add("alice", [*IRRELEVANT, note("w", "The wifi password at the cabin is pine-cone-1987.")])
    hits = await history.search("alice", QUESTION, limit=4)
    best = await history.relevance(QUESTION, hits)
    without = await history.relevance(QUESTION, [h for h in hits if h.record.id != "w"])
    assert best > history.min_relevance > without
    assert await history.relevance(QUESTION, []) == NO_RELEVANCE


@pytest.mark.parametrize(
    ("question", "terms"),
    [
        (QUESTION, "wifi password cabin"),
        ("What did Caroline research?", "Caroline research"),
        ("who is it?", "who is it"),
        ("?!", ""),
        ("cabin " * 100, ("cabin " * 100)[:119] + "…"),
    ],
)
def test_the_reply_names_what_was_looked_for(question: str, terms: str) -> None:
    assert key_terms(question) == terms


async def test_each_excerpt_is_judged_by_the_model_that_reads_both_its_language_and_the_questions(
    history: HistoryIndex,
) -> None:
    """With the paired default: an English question and an English note by MiniLM alone, a note in another
    language than the question by the multilingual USE alone, a question and note in one other language by both;
    each on its own calibrated scale, brought to the gate's."""
    gates = calibrated_gates(history.embedder.identity)
    assert gates.english and gates.across and len({gates.whole, gates.english, gates.across}) == 3
    en = note("en", "The wifi password at the cabin is pine-cone-1987.")
    de = note("de", "Das WLAN-Passwort in der Hütte lautet pine-cone-1987.")
    await history.add("alice", [en, de])
    by_id = {hit.record.id: hit for hit in await history.search("alice", QUESTION, limit=2)}

    async def alone(question: str, record: str, model: int | None) -> float:
        """The cosine of one model alone (0: MiniLM, 1: USE; None: both) of the question to the record."""
        query = await history.embedder.embed_query(question)
        halves = history.embedder.halves(query)
        assert halves is not None
        vector = query if model is None else halves[model]
        return (await history.store.closeness("alice", vector, [record]))[record]

    german = "Wie lautet das WLAN-Passwort der Hütte?"
    gate = gates.whole
    assert await history.relevance(QUESTION, [by_id["en"]]) == pytest.approx(
        await alone(QUESTION, "en", 0) * gate / gates.english
    )
    assert await history.relevance(QUESTION, [by_id["de"]]) == pytest.approx(
        await alone(QUESTION, "de", 1) * gate / gates.across
    )
    assert await history.relevance(german, [by_id["de"]]) == pytest.approx(await alone(german, "de", None))
    assert await history.relevance(german, [by_id["en"]]) == pytest.approx(
        await alone(german, "en", 1) * gate / gates.across
    )
    both = await history.relevance(QUESTION, [by_id["en"], by_id["de"]])
    each = [await history.relevance(QUESTION, [by_id[rid]]) for rid in ("en", "de")]
    assert both == max(each) > gate
    history.min_relevance = 0.99  # the operator's gate: the relevances stay on one scale, and every one is below it
    assert await history.relevance(QUESTION, [by_id["en"], by_id["de"]]) == both < history.min_relevance


def chat(rid: str, author: str, text: str, language: str) -> HistoryRecord:
    return HistoryRecord(
        id=rid, person="alice", channel="chat", conversation="Giulia & Tobias", author=author, time=WHEN, text=text,
        source="chat:giulia", link=f"chat-{rid}", language=language,
    )  # fmt: skip


async def test_a_question_naming_someone_the_history_never_mentions_abstains(
    history: HistoryIndex, pipeline: AnswerPipeline, fake_llm: FakeOpenAI
) -> None:
    """Outside English the likeness alone cannot tell "what did Marco give Giulia?" from "what did Tobias give
    Giulia?" over a chat about Tobias's present; a name no excerpt or author mentions rules the excerpts in the
    question's language out. An excerpt in another language may write a place otherwise ("Lisbona", "Lisbon"),
    and is still judged by its likeness."""
    await history.add("alice", [
        chat("1", "Tobias", "Ti ho preso una macchina per il caffè per la casa nuova, la moka non basta più", "it"),
        chat("2", "Giulia", "Grazie Tobi!! La userò ogni mattina", "it"),
        chat("3", "Tobias", "Ad aprile vado a Lisbona per il matrimonio di mio cugino", "it"),
    ])  # fmt: skip
    asked = "Che cosa ha regalato Tobias a Giulia per la casa nuova?"
    hits = await history.search("alice", asked, limit=3)
    assert await history.relevance(asked, hits) >= history.min_relevance
    answer = await pipeline.answer("alice", "Alice", asked, "main", [])
    assert not answer.abstained and len(fake_llm.requests) == 1

    stranger = "Che cosa ha regalato Marco a Giulia per la casa nuova?"
    hits = await history.search("alice", stranger, limit=3)
    assert await history.relevance(stranger, hits) == NO_RELEVANCE
    answer = await pipeline.answer("alice", "Alice", stranger, "main", [])
    assert answer.abstained and len(fake_llm.requests) == 1

    across = "Why is Tobias going to Lisbon in April?"
    hits = await history.search("alice", across, limit=3)
    assert await history.relevance(across, hits) >= history.min_relevance
