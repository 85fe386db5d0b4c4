"""Citations that hold the fact: each sentence of a model's answer is checked against the excerpts it was given, and
cites the one that says it, whatever number the model wrote (bridge/answering/support.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.answering.answer import UNSUPPORTED, AnswerPipeline
from bridge.answering.support import sentences
from bridge.config import RetrievalSettings
from bridge.history.index import HistoryIndex
from bridge.messages import HistoryRecord
from bridge.models.llm import ModelClient
from tests.fakes.openai_server import FakeOpenAI, retrieved_history
from tests.harness import Harness
from tests.helpers import eventually, model_for

WHEN = datetime(2024, 5, 3, 18, 30, tzinfo=UTC)


def message(rid: str, text: str, author: str = "Anna", minute: int = 0) -> HistoryRecord:
    return HistoryRecord(
        id=rid, person="alice", channel="whatsapp", conversation="Family", author=author,
        time=WHEN.replace(minute=minute), text=text, source="whatsapp:family.txt", link=f"msg-{rid}",
    )  # fmt: skip


CHAT = [
    message("a", "Are you coming to the barbecue on Sunday?", "Anna", 1),
    message("b", "Yes! I will bring my guitar.", "Marco", 2),
    message("c", "Great, and the cake?", "Anna", 3),
    message("d", "My sister bakes a lemon cheesecake for it.", "Marco", 4),
    message("e", "Perfect, see you at noon.", "Anna", 5),
]


def number_of(request_messages: list[dict[str, Any]], text: str) -> int:
    """The number the prompt gave the excerpt holding `text`."""
    history = retrieved_history({"messages": request_messages})
    for block in history.split("\n\n"):
        if text in block:
            return int(block.split("]", 1)[0].lstrip("["))
    raise AssertionError(f"{text!r} was not in the prompt")


@pytest.fixture
async def pipeline(history: HistoryIndex, fake_llm: FakeOpenAI) -> AsyncIterator[AnswerPipeline]:
    await history.add("alice", CHAT)
    models = ModelClient({"main": model_for(fake_llm)})
    yield AnswerPipeline(history, models)
    await models.close()


def citing_the_wrong_one(answer: str, fact: str) -> Callable[[list[dict[str, Any]]], str]:
    """A model that cites an excerpt next to the one holding `fact` (as small models do)."""

    def reply(request_messages: list[dict[str, Any]]) -> str:
        right = number_of(request_messages, fact)
        return answer.format(wrong=right + 1 if right < 5 else right - 1)

    return reply


async def test_a_citation_moves_to_the_message_that_says_it(pipeline: AnswerPipeline, fake_llm: FakeOpenAI) -> None:
    fake_llm.answer = citing_the_wrong_one("Marco's sister bakes a lemon cheesecake. [{wrong}]", "lemon cheesecake")
    answer = await pipeline.answer("alice", "Alice", "Who bakes the cake for the barbecue?", "main", [])
    [citation] = answer.citations
    assert citation.excerpt == "My sister bakes a lemon cheesecake for it."
    assert answer.text == f"Marco's sister bakes a lemon cheesecake. [{citation.number}]"
    assert citation.claims == ["Marco's sister bakes a lemon cheesecake."]


async def test_a_sentence_no_excerpt_says_is_left_out(pipeline: AnswerPipeline, fake_llm: FakeOpenAI) -> None:
    fake_llm.answer = lambda _: "Marco brings his guitar. [1] He also brings twelve bottles of Barolo wine. [2]"
    answer = await pipeline.answer("alice", "Alice", "What does Marco bring to the barbecue?", "main", [])
    assert "Barolo" not in answer.text, "what no message says is not shown with a citation"
    [citation] = answer.citations
    assert citation.excerpt == "Yes! I will bring my guitar."
    assert answer.text == f"Marco brings his guitar. [{citation.number}]"
    assert [s.supported for s in answer.support] == [True, False]


async def test_an_answer_nothing_supports_cites_nothing_and_says_so(
    pipeline: AnswerPipeline, fake_llm: FakeOpenAI
) -> None:
    fake_llm.answer = lambda _: "The barbecue is cancelled because of a thunderstorm warning. [2]"
    answer = await pipeline.answer("alice", "Alice", "Is the barbecue on Sunday still on?", "main", [])
    assert answer.citations == []
    assert answer.text.startswith("The barbecue is cancelled because of a thunderstorm warning.")
    assert "[2]" not in answer.text and answer.text.endswith(UNSUPPORTED)


async def test_sources_show_each_sentence_then_the_message_that_says_it(
    history: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    await history.add("alice", CHAT)
    fake_llm.answer = lambda _: "Marco brings his guitar. [3] His sister bakes a lemon cheesecake. [3]"
    async with harness_factory({"main": model_for(fake_llm)}, retrieval=RetrievalSettings()) as h:
        await h.adapter.send("100", "What is Marco bringing to the barbecue?")
        await eventually(lambda: h.adapter.delivered)
        await h.adapter.send("100", "/sources")
        await eventually(lambda: len(h.adapter.delivered) == 2)
    lines = h.adapter.delivered[1].text.splitlines()
    guitar = lines.index("“Marco brings his guitar.”")
    cake = lines.index("“His sister bakes a lemon cheesecake.”")
    assert lines[guitar + 2].strip() == "> Yes! I will bring my guitar."
    assert lines[cake + 2].strip() == "> My sister bakes a lemon cheesecake for it."


def test_sentences_keep_their_own_citation_marks() -> None:
    assert sentences("Anna comes. [2] Bob too [3][4]. Then? Yes!\n- a list item [1]") == [
        ("Anna comes.", (2,)),
        ("Bob too.", (3, 4)),
        ("Then?", ()),
        ("Yes!", ()),
        ("- a list item", (1,)),
    ]


async def test_an_answer_in_another_language_cites_the_note_that_says_it(
    history: HistoryIndex, fake_llm: FakeOpenAI
) -> None:
    """A French answer shares no word with the German note it says: the multilingual model alone judges them."""
    note = message("k", "Der Ersatzschlüssel liegt unter dem blauen Blumentopf.", "Alice")
    await history.add("alice", [note, *CHAT])
    models = ModelClient({"main": model_for(fake_llm)})
    try:
        fake_llm.answer = lambda _: "La clé de secours est sous le pot de fleurs bleu. [3]"
        answer = await AnswerPipeline(history, models).answer(
            "alice", "Alice", "Où est la clé de secours ?", "main", []
        )
        assert [c.excerpt for c in answer.citations] == ["Der Ersatzschlüssel liegt unter dem blauen Blumentopf."]
        fake_llm.answer = lambda _: "La clé de secours est dans la boîte à gants de la voiture. [1]"
        answer = await AnswerPipeline(history, models).answer(
            "alice", "Alice", "Où est la clé de secours ?", "main", []
        )
        assert answer.citations == [], "the note says another place"
    finally:
        await models.close()
