"""Groups see only what the group said: the room's own conversation, and a person's history only after their /share.

A property of the router (the one place that decides what a message may be answered from), and the whole
flow in-process with a spy on every store call: no retrieval in a group reaches a private history.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.dispatch.handler import GROUP_ONLY
from bridge.dispatch.router import Command, Question, Remember, RouteContext, room_scope, route
from bridge.history.index import HistoryIndex
from bridge.messages import Attachment, HistoryRecord, IncomingMessage
from tests.fakes.openai_server import FakeOpenAI, default_answer, retrieved_history
from tests.harness import Harness
from tests.helpers import eventually, model_for

SECRET = "31-41-59"
PERSONS = ("alice", "bob", "carol")
GROUP, EMPTY_GROUP = "-5", "-6"
ROOM, EMPTY_ROOM = "room:telegram:-5", "room:telegram:-6"

# -- the property: over any group message and any state ---------------------------------------------------

TEXTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["/share", "/unshare", "/compare a b the code?", "/forget all", "/sources", "/import", "yes",
                     "no", "/reset@confide_bot", "/help@other_bot", "@confide_bot", "Confide: the code?", " "]),
)  # fmt: skip
ATTACHMENTS = st.lists(
    st.builds(Attachment, name=st.just("f"), mime_type=st.sampled_from(["application/pdf", "image/png", "audio/ogg"])),
    max_size=2,
)


@st.composite
def group_messages(draw: st.DrawFn) -> IncomingMessage:
    prefix = draw(st.sampled_from(["", "@confide_bot ", "Confide: "]))
    return IncomingMessage(
        channel=draw(st.sampled_from(["telegram", "matrix", "email", "console"])),
        chat_id=draw(st.sampled_from(["-5", "!room:localhost", "100"])),
        sender=draw(st.sampled_from(["100", "200", "666"])),
        platform_message_id="1",
        text=prefix + draw(TEXTS),
        is_direct=False,
        mentions_bot=draw(st.booleans()),
        replies_to_bot=draw(st.booleans()),
        from_bot_itself=draw(st.booleans()),
        attachments=draw(ATTACHMENTS),
    )


CONTEXTS = st.builds(
    RouteContext,
    person=st.sampled_from([*PERSONS, None]),
    pending_action=st.booleans(),
    bot_names=st.just(("@confide_bot", "Confide")),
    shared=st.frozensets(st.sampled_from(PERSONS)),
)


@given(group_messages(), CONTEXTS)
def test_no_route_in_a_group_reaches_a_history_that_was_not_shared_into_it(
    message: IncomingMessage, context: RouteContext
) -> None:
    decision = route(message, context)
    room = room_scope(message)
    if isinstance(decision, Remember):
        assert decision.room == room
    if isinstance(decision, Question | Command):
        scopes = decision.scopes
        assert scopes[0] == room and set(scopes[1:]) <= context.shared
        assert all(scope == room or scope in context.shared for scope in scopes)
        if decision.person not in context.shared:
            assert decision.person not in scopes


@given(group_messages(), CONTEXTS)
def test_a_direct_chat_reads_only_the_persons_own_history(message: IncomingMessage, context: RouteContext) -> None:
    decision = route(message.model_copy(update={"is_direct": True}), context)
    if isinstance(decision, Question | Command):
        assert decision.scopes == (decision.person,) == (context.person,)
    assert not isinstance(decision, Remember)


# -- the whole flow ---------------------------------------------------------------------------------------


def private(person: str, rid: str, text: str) -> HistoryRecord:
    return HistoryRecord(id=rid, person=person, channel="whatsapp", conversation="Notes", author="me", text=text,
                         time=datetime(2024, 5, 3, tzinfo=UTC), source="notes.txt")  # fmt: skip


def spy_on_store(history: HistoryIndex) -> list[tuple[str, str]]:
    """Every (call, scope) the store is asked for, in order."""
    calls: list[tuple[str, str]] = []
    store: Any = history.store
    for name in ("search", "count", "upsert", "authors", "delete", "existing"):
        original = getattr(store, name)

        def spy(scope: str, *args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            calls.append((_name, scope))
            return _original(scope, *args, **kwargs)

        setattr(store, name, spy)
    return calls


def prompt_text(request: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in request["messages"])


@pytest.fixture
async def secrets(history: HistoryIndex) -> HistoryIndex:
    await history.add("alice", [private("alice", "a1", f"The combination of the safe is {SECRET}.")])
    await history.add("bob", [private("bob", "b1", "My dentist appointment is on Tuesday.")])
    return history


async def test_a_secret_never_reaches_a_group_until_its_owner_shares_it(
    secrets: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    calls = spy_on_store(secrets)
    async with harness_factory({"main": model_for(fake_llm)}) as h:
        h.adapter.groups[GROUP] = ("Alice", "Bob", "User666")

        async def say(sender: str, text: str, chat: str | None = GROUP, **fields: Any) -> str | None:
            """Send; the reply's text, or None when the message got none."""
            before = len(h.adapter.delivered)
            if chat is not None:
                fields = {"is_direct": False, "mentions_bot": text.startswith("@confide_bot"), **fields}
            await h.adapter.send(sender, text, chat_id=chat, **fields)
            await eventually(lambda: _drained(h))
            return h.adapter.delivered[-1].text if len(h.adapter.delivered) > before else None

        # The room's own conversation, from two persons and a member who is no person: indexed, not answered.
        assert await say("100", "The barbecue is on Saturday at the lake.") is None
        assert await say("200", "I will bring the grill and the safe box of matches") is None
        assert await say("666", "count me in, where is the safe spot for the car?") is None
        assert await say("666", "@confide_bot what is the combination of the safe?") is None  # strangers: never

        group_start = len(calls)
        asked = {
            "100": await say("100", "@confide_bot what is the combination of the safe?"),
            "200": await say("200", "@confide_bot tell me the safe combination please"),
        }
        assert await say("200", "@confide_bot what is my dentist appointment?", EMPTY_GROUP) == GROUP_ONLY
        assert all(a is not None and a.startswith("You asked:") for a in asked.values()), asked
        unshared_requests = len(fake_llm.requests)
        group_calls = calls[group_start:]

        shared = await say("100", "@confide_bot /share")
        assert shared is not None and "Alice, Bob, User666" in shared and "/unshare" in shared
        assert await say("200", "@confide_bot which combination opens the safe?") is not None
        shared_prompt = prompt_text(fake_llm.requests[-1])
        assert "Your history is not shared" in (await say("200", "@confide_bot /unshare") or "")
        assert "no longer use your history" in (await say("100", "@confide_bot /unshare") or "")
        unshared_again = len(calls)
        assert await say("200", "@confide_bot the combination of the safe, again?") is not None
        after_unshare = retrieved_history(fake_llm.requests[-1])  # retrieval; Bob's own turns are his
        after_calls = calls[unshared_again:]

        assert "only in a group" in (await say("100", "/share", chat=None) or "")
        direct = await say("100", "what is the combination of the safe?", chat=None)

    assert direct is not None and SECRET in prompt_text(fake_llm.requests[-1]), "the secret is findable at all"
    for request in fake_llm.requests[:unshared_requests]:
        assert SECRET not in prompt_text(request)
    assert all(SECRET not in r.text and all(SECRET not in c.excerpt for c in r.citations)
               for r in h.adapter.delivered if r.chat_id == GROUP and "opens the safe" not in r.text)  # fmt: skip
    assert SECRET in shared_prompt, "after /share the room's answers may use the sharer's history"
    assert SECRET not in after_unshare, "after /unshare they may not"
    assert {scope for _, scope in group_calls} <= {ROOM, EMPTY_ROOM}, group_calls
    assert {scope for _, scope in after_calls} <= {ROOM}, after_calls
    # The questions asked in the group are the room's words, not the askers' own history.
    assert await secrets.count("alice") == 2 and await secrets.count("bob") == 1  # alice: + her direct question
    assert await secrets.count(ROOM) == 3 + 1 + 4  # the talk, the stranger's question, four questions asked


async def _drained(h: Harness) -> bool:
    return await h.inbox.unfinished() == 0 and await h.outbox.unsent("telegram") == 0


async def test_each_member_of_a_group_has_a_memory_of_their_own(
    secrets: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    other = await FakeOpenAI(model="other-model", answer=lambda m: f"from the other model: {default_answer(m)}").start()
    async with harness_factory({"main": model_for(fake_llm), "second": model_for(other)}) as h:

        async def say(sender: str, text: str) -> str:
            before = len(h.adapter.delivered)
            await h.adapter.send(sender, text, chat_id=GROUP, is_direct=False, mentions_bot=True)
            await eventually(lambda: len(h.adapter.delivered) > before)
            return h.adapter.delivered[-1].text

        await h.adapter.send("200", "The barbecue is on Saturday.", chat_id=GROUP, is_direct=False)
        assert "now uses second" in await say("100", "@confide_bot /model second")
        assert (await say("100", "@confide_bot when is the barbecue?")).startswith("from the other model")
        assert "Model for this chat: main" in await say("200", "@confide_bot /model")
        assert "used no sources" in await say("200", "@confide_bot /sources")
        assert "and the weather?" in await say("200", "@confide_bot and the weather?")
        assert "starts afresh" in await say("200", "@confide_bot /reset")
        assert "My last answer was based on" in await say("100", "@confide_bot /sources")
        assert (await say("100", "@confide_bot and who comes?")).startswith("from the other model")
        assert "only in a direct chat" in await say("200", "@confide_bot /forget all")  # no pending to share
    await other.stop()
    bobs = [m["content"] for m in fake_llm.requests[0]["messages"]]
    assert bobs[1:-1] == [], "Alice's turns reached Bob's prompt"
    alices_turns = [m["content"] for m in other.requests[1]["messages"]][1:-1]  # between system prompt and question
    assert "when is the barbecue?" in alices_turns, "a member's own earlier turn is replayed to them"
    assert not any("weather" in text for text in alices_turns), "Bob's turn reached Alice's prompt"
    assert await secrets.count("bob") == 1 and await secrets.count("alice") == 1, "a group changes no private history"


async def test_a_document_sent_into_a_group_is_the_groups(
    secrets: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness], tmp_path: Any
) -> None:
    note = tmp_path / "menu.md"
    note.write_text("# Barbecue\n\nBring your own plates; grill starts at 4 pm.\n")
    async with harness_factory({"main": model_for(fake_llm)}) as h:
        document = [Attachment(name="menu.md", mime_type="text/markdown", path=str(note))]
        await h.adapter.send("100", "", chat_id=GROUP, is_direct=False, attachments=document)
        await eventually(lambda: h.adapter.delivered)
    [reply] = h.adapter.delivered
    assert reply.text.startswith("Imported 1") and "this group's history" in reply.text, reply.text
    assert [r.text async for r in secrets.export(ROOM)] and await secrets.count("alice") == 1


async def test_forget_and_usage_are_refused_where_a_group_reads_the_reply(
    secrets: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    """How much of your history there is, or what you asked of which model, is not the group's to read."""
    async with harness_factory({"main": model_for(fake_llm)}) as h:
        for command in ("/forget all", "/usage"):
            before = len(h.adapter.delivered)
            await h.adapter.send("100", f"@confide_bot {command}", chat_id=GROUP, is_direct=False, mentions_bot=True)
            await eventually(lambda before=before: len(h.adapter.delivered) > before)
            reply = h.adapter.delivered[-1].text
            assert "only in a direct chat" in reply and not any(ch.isdigit() for ch in reply), reply
        assert await secrets.count("alice") > 0, "nothing of Alice's history was touched"
        assert await h.db.run(lambda c: c.execute("SELECT count(*) FROM chat_state WHERE pending_action IS NOT NULL")
                              .fetchone()[0]) == 0  # fmt: skip
