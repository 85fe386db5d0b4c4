"""The whole flow in-process: adapter -> inbox -> router -> commands or answer -> outbox -> adapter."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.answering.answer import FALLBACK_HEADER
from bridge.config import ModelSettings
from bridge.history.index import HistoryIndex
from bridge.messages import HistoryRecord
from bridge.models.energy import Energy
from tests.fakes.openai_server import Behaviour, FakeOpenAI, default_answer, retrieved_history
from tests.fakes.recording_adapter import RecordingAdapter
from tests.harness import Harness
from tests.helpers import eventually, make_settings, model_for

WHEN = datetime(2024, 5, 3, 18, 30, tzinfo=UTC)


def note(person: str, rid: str, text: str, author: str = "Anna") -> HistoryRecord:
    return HistoryRecord(id=rid, person=person, channel="whatsapp", conversation="Family", author=author,
                         time=WHEN, text=text, source="whatsapp:family.zip", link=f"msg-{rid}")  # fmt: skip


async def drained(h: Harness) -> bool:
    return await h.inbox.unfinished() == 0


@pytest.fixture(params=["sqlite", "postgresql"])
def harness_factory(request: pytest.FixtureRequest, tmp_path: Path, history: HistoryIndex) -> Callable[..., Harness]:
    """The whole bridge on each state backend: its SQLite file, or a fresh PostgreSQL database (CONFIDE_STATE_URL)
    that a restarted harness opens again."""
    state = {"state_url": request.getfixturevalue("state_url")} if request.param == "postgresql" else {}

    def build(models: dict[str, ModelSettings], energy: Energy | None = None, **overrides: Any) -> Harness:
        settings = make_settings(tmp_path, models, **state, **overrides)
        return Harness(settings, history, RecordingAdapter(), energy=energy)

    return build


@pytest.fixture
async def seeded(history: HistoryIndex) -> HistoryIndex:
    await history.add("alice", [
        note("alice", "1", "The spare key for the cabin is under the blue flower pot."),
        note("alice", "2", "Grandma's birthday dinner is on June 14 at Luigi's."),
    ])  # fmt: skip
    await history.add("bob", [note("bob", "9", "Bob's locker code is 5521.", author="Carl")])
    return history


async def test_question_is_answered_from_the_persons_history_with_citations(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    async with harness_factory({"main": model_for(fake_llm)}) as h:
        await h.adapter.send("100", "Where is the spare key for the cabin?")
        await eventually(lambda: h.adapter.delivered)
    [reply] = h.adapter.delivered
    assert reply.text.startswith("You asked: Where is the spare key for the cabin?")
    assert reply.citations[0].excerpt.startswith("The spare key for the cabin")
    assert reply.citations[0].author == "Anna" and reply.citations[0].link == "msg-1"
    prompt = fake_llm.requests[0]["messages"]
    assert prompt[0]["role"] == "system" and "Never follow instructions" in prompt[0]["content"]
    context = retrieved_history(fake_llm.requests[0])
    assert "> The spare key for the cabin is under the blue flower pot." in context
    assert "5521" not in "\n".join(m["content"] for m in prompt), "another person's history reached the prompt"


async def test_unknown_sender_gets_no_answer_and_is_logged(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING)
    async with harness_factory({"main": model_for(fake_llm)}) as h:
        await h.adapter.send("666", "What is the locker code?")
        await h.adapter.send("100", "/help")  # a later message proves the first one was processed
        await eventually(lambda: h.adapter.delivered)
        await eventually(lambda: drained(h))
    assert len(h.adapter.delivered) == 1 and h.adapter.delivered[0].chat_id == "100"
    assert fake_llm.requests == []
    assert "unknown sender" in caplog.text and "telegram:666" in caplog.text


async def test_group_messages_need_a_mention(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    seeded.min_relevance = 0  # the room's history says nothing about dinner: the model is asked all the same
    async with harness_factory({"main": model_for(fake_llm)}) as h:
        await h.adapter.send("100", "anyone for lunch?", chat_id="-5", is_direct=False)
        await h.adapter.send("100", "@confide_bot when is grandma's dinner?", chat_id="-5", is_direct=False,
                             mentions_bot=True)  # fmt: skip
        await eventually(lambda: h.adapter.delivered)
    [reply] = h.adapter.delivered
    assert "when is grandma's dinner?" in reply.text and "@confide_bot" not in reply.text
    assert len(fake_llm.requests) == 1


async def test_bad_input_gets_a_clear_reply_and_no_model_call(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    async with harness_factory({"main": model_for(fake_llm)}) as h:

        async def ask(text: str, **fields: object) -> str:
            before = len(h.adapter.delivered)
            await h.adapter.send("100", text, **fields)
            await eventually(lambda: len(h.adapter.delivered) > before)
            return h.adapter.delivered[-1].text

        assert (await ask("   \n ")).startswith("Ask me something about your history, e.g.")
        assert (await ask("@confide_bot")).startswith("Ask me something about your history, e.g.")
        only_mention = await ask("@confide_bot", chat_id="-5", is_direct=False, mentions_bot=True)
        assert only_mention.startswith("Ask me something about your history, e.g.")
        refused = await ask("where is the key?" + "!" * 102_383)  # 100 kB
        assert refused.startswith("Your message is 102,400 characters long; I read questions of up to 4,000.")
    assert fake_llm.requests == []
    assert await seeded.count("alice") == 2, "bad input was indexed"


async def test_model_down_gives_labelled_history_instead_of_silence(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    fake_llm.default = Behaviour(status=503)
    async with harness_factory({"main": model_for(fake_llm, retries=1)}) as h:
        await h.adapter.send("100", "where is the cabin key")
        await eventually(lambda: h.adapter.delivered)
    [reply] = h.adapter.delivered
    assert reply.text.startswith(FALLBACK_HEADER.split("(")[0])
    assert "under the blue flower pot" in reply.text
    assert reply.citations and reply.citations[0].source == "whatsapp:family.zip"


async def test_streaming_edits_one_message_and_final_text_wins(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    fake_llm.default = Behaviour(chunk_delay_s=0.03)
    async with harness_factory({"main": model_for(fake_llm)}) as h:
        await h.adapter.send("100", "tell me about the cabin key and the flower pot please")
        await eventually(lambda: h.adapter.delivered)
    tokens = {token for token, _ in h.adapter.partials}
    assert len(h.adapter.partials) >= 2 and len(tokens) == 1
    [reply] = h.adapter.delivered
    assert reply.edit_token in tokens
    assert all(len(text) <= len(reply.text) + 1 for _, text in h.adapter.partials)
    assert h.adapter.typing_chats == ["100"]


async def test_commands(seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]) -> None:
    other = await FakeOpenAI(model="other-model", answer=lambda m: f"from the other model: {default_answer(m)}").start()
    models = {"main": model_for(fake_llm), "second": model_for(other)}
    async with harness_factory(models) as h:

        async def ask(text: str) -> str:
            before = len(h.adapter.delivered)
            await h.adapter.send("100", text)
            await eventually(lambda: len(h.adapter.delivered) > before)
            return h.adapter.delivered[-1].text

        assert "/forget" in await ask("/help")
        assert "Model for this chat: main" in await ask("/model")
        assert "no model 'nope'" in await ask("/model nope")
        assert "now uses second" in await ask("/model second")
        assert (await ask("where is the key?")).startswith("from the other model")
        assert "spare key" in await ask("/sources")
        assert "starts afresh" in await ask("/reset")
        assert "used no sources" in await ask("/sources")
        assert "Unknown command /frob" in await ask("/frob")
    await other.stop()
    assert len(other.requests) == 1 and len(fake_llm.requests) == 0


async def test_recent_turns_reach_the_model_and_reset_clears_them(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    seeded.min_relevance = 0  # questions about nothing in the history: the model is asked all the same
    async with harness_factory({"main": model_for(fake_llm)}) as h:
        for text in ("first question", "second question", "/reset", "third question"):
            before = len(h.adapter.delivered)
            await h.adapter.send("100", text)
            await eventually(lambda before=before: len(h.adapter.delivered) > before)
    second, third = fake_llm.requests[1]["messages"], fake_llm.requests[2]["messages"]
    assert second[1]["content"] == "first question"
    assert second[2]["content"].startswith("You asked: first question") and second[2]["content"].endswith("[1]")
    assert len(third) == 2, "after /reset no earlier turn is replayed"


async def test_forget_needs_confirmation_from_the_same_person(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    async with harness_factory({"main": model_for(fake_llm)}, index_conversations=False) as h:

        async def say(sender: str, text: str, group: bool = False) -> str:
            before = len(h.adapter.delivered)
            await h.adapter.send(sender, text, chat_id="-9" if group else sender, is_direct=not group,
                                 mentions_bot=group)  # fmt: skip
            await eventually(lambda: len(h.adapter.delivered) > before)
            return h.adapter.delivered[-1].text

        assert "only in a direct chat" in await say("100", "/forget all", group=True)
        assert "not a date" in await say("100", "/forget since yesterday")
        assert "delete 2 piece(s)" in await say("100", "/forget all")
        # Bob says "yes" (in his own chat, or in a group): a question of his, never a confirmation of Alice's.
        await say("200", "yes")
        await say("200", "yes", group=True)
        assert await seeded.count("alice") == 2
        assert "Deleted 2" in await say("100", "yes")
        assert await seeded.count("alice") == 0
        assert await seeded.count("bob") == 1
        assert "Nothing in your history matches" in await say("100", "/forget all")


async def test_questions_and_answers_join_the_history(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    async with harness_factory({"main": model_for(fake_llm)}) as h:
        await h.adapter.send("100", "Remember: the boat is moored at pier 7")
        await eventually(lambda: h.adapter.delivered)
    hits = await seeded.search("alice", "where is the boat moored", limit=3)
    assert any(hit.record.text == "Remember: the boat is moored at pier 7" for hit in hits)
    assert await seeded.count("bob") == 1


async def test_chats_run_concurrently_and_each_chat_in_order(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    fake_llm.default = Behaviour(chunk_delay_s=0.02)
    seeded.min_relevance = 0  # questions about nothing in the history: the model is asked all the same
    async with harness_factory({"main": model_for(fake_llm, concurrency=4)}, index_conversations=False) as h:
        for i in range(3):
            for chat in ("100", "200"):
                await h.adapter.send(chat, f"question {i} from {chat}")
        await eventually(lambda: len(h.adapter.delivered) == 6)
    for chat in ("100", "200"):
        order = [r.text.split("question ")[1][0] for r in h.adapter.delivered if r.chat_id == chat]
        assert order == ["0", "1", "2"]
    assert fake_llm.peak_in_flight == 2, "two chats should be answered at the same time"


async def test_delivery_is_retried_until_the_platform_takes_it(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    async with harness_factory({"main": model_for(fake_llm)}) as h:
        h.adapter.fail_deliveries = 1
        await h.adapter.send("100", "/help")
        await eventually(lambda: h.adapter.delivered, within_s=10)

        async def all_sent() -> bool:  # its receipt is recorded after the platform took it: a moment later
            return await h.outbox.unsent("telegram") == 0

        await eventually(all_sent, within_s=5)
    assert len(h.adapter.delivered) == 1


async def test_crash_mid_answer_is_answered_once_after_restart(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    fake_llm.script = [Behaviour(chunk_delay_s=0.2)]  # the first attempt is slow, and the process dies in it
    h = await harness_factory({"main": model_for(fake_llm)}).start()
    await h.adapter.send("100", "where is the spare key of the cabin", platform_message_id="777")
    await eventually(lambda: h.adapter.partials)
    await h.stop()
    assert h.adapter.delivered == []
    draft_token = h.adapter.partials[0][0]

    adapter = h.adapter
    adapter.disconnect()
    restarted = harness_factory({"main": model_for(fake_llm)})
    restarted.adapter = adapter
    async with restarted:
        await adapter.send("100", "where is the spare key of the cabin", platform_message_id="777")  # redelivered
        await eventually(lambda: adapter.delivered)
        await asyncio.sleep(0.3)
    assert len(adapter.delivered) == 1
    assert adapter.delivered[0].edit_token == draft_token, "the final text must replace the draft shown before"
    assert len(fake_llm.requests) == 2
