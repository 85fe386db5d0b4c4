"""The Matrix adapter end to end against a real Synapse on loopback, with nio clients as the persons."""

from __future__ import annotations

import io
import itertools
import json
import struct
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from nio import Event, RoomEncryptedImage, RoomMessageImage, RoomMessageNotice, UploadResponse
from nio.crypto.attachments import decrypt_attachment
from nio.event_builders import ToDeviceMessage

from adapters.matrix import build_adapter
from adapters.matrix.client import MatrixAdapter
from adapters.matrix.settings import MatrixSettings
from bridge.config import PersonSettings, Settings, TranscriberSettings
from bridge.dispatch.reanswer import FOLLOW_UP
from bridge.history.index import HistoryIndex
from bridge.history.store.edge import EdgeStore
from bridge.intake.hearing import Hearing
from bridge.messages import HistoryRecord
from bridge.models.embedder import LocalEmbedder
from bridge.models.transcriber import OpenAITranscriber
from tests.cli_helpers import cli_env, run_cli
from tests.fakes.openai_server import Behaviour, FakeOpenAI, retrieved_history
from tests.harness import Harness
from tests.helpers import eventually, make_settings, model_for
from tests.synapse import Person, Synapse

PASSWORD = "secret-password"


@pytest.fixture(scope="session")
async def synapse() -> AsyncIterator[Synapse]:
    server = await Synapse().start()
    yield server
    await server.stop()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def people(synapse: Synapse) -> AsyncIterator[dict[str, Person]]:
    started = {name: await Person(synapse, unique(name)).start() for name in ("ana", "bea", "stranger")}
    yield started
    for person in started.values():
        await person.stop()


async def new_bot(synapse: Synapse) -> str:
    return str((await synapse.register(unique("confide"), PASSWORD))["user_id"])


def settings_for(
    tmp_path: Path, synapse: Synapse, bot: str, people: dict[str, Person], llm: FakeOpenAI, **matrix: Any
) -> Settings:
    persons = [PersonSettings(id=n, name=n.title(), accounts=[f"matrix:{people[n].user_id}"]) for n in ("ana", "bea")]
    fields = {"enabled": True, "homeserver": synapse.url, "user_id": bot, "password": PASSWORD, **matrix}
    return make_settings(tmp_path, {"main": model_for(llm)}, persons=persons, matrix=MatrixSettings(**fields))


def bridge_for(settings: Settings, history: HistoryIndex) -> Harness:
    return Harness(settings, history, build_adapter(settings))  # type: ignore[arg-type]


def replies_to(person: Person, room_id: str, bot: str, event_id: str) -> list[Event]:
    """The bot's messages that reply to one event (not its edits)."""
    return [
        e
        for e in person.from_user(room_id, bot)
        if e.source["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == event_id
    ]


def edits_of(person: Person, room_id: str, bot: str, event_id: str) -> list[Event]:
    return [
        e
        for e in person.from_user(room_id, bot)
        if e.source["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"
        and e.source["content"]["m.relates_to"].get("event_id") == event_id
    ]


def shown(person: Person, room_id: str, bot: str, question_id: str) -> list[str]:
    """What the person's client shows of each reply to a question: the latest edit wins."""
    bodies = []
    for reply in replies_to(person, room_id, bot, question_id):
        edits = edits_of(person, room_id, bot, reply.event_id)
        bodies.append(
            edits[-1].source["content"]["m.new_content"]["body"] if edits else reply.source["content"]["body"]
        )
    return bodies


def final_answer(person: Person, room_id: str, bot: str, question_id: str, question: str) -> bool:
    return any(
        b.startswith(f"You asked: {question}") and "…" not in b for b in shown(person, room_id, bot, question_id)
    )


async def test_direct_chat_streams_by_edits_and_the_final_text_wins(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path
) -> None:
    ana, stranger = people["ana"], people["stranger"]
    bot = await new_bot(synapse)
    fake_llm.default = Behaviour(chunk_delay_s=0.35)
    async with bridge_for(settings_for(tmp_path, synapse, bot, people, fake_llm), history):
        strangers_room = await stranger.create_room(invite=(bot,))
        room = await ana.create_room()
        before = await ana.send(room, "This was said before Confide joined: answer it?")
        await ana.invite(room, bot)
        early = await ana.send(room, "Asked at once, before Confide had joined: answered?")  # invited, not joined
        await eventually(lambda: ana.joined(room, bot))
        await eventually(lambda: replies_to(ana, room, bot, early), within_s=30)

        question = "Where is the spare key for the cabin?"
        asked = await ana.send(room, question)
        await eventually(lambda: final_answer(ana, room, bot, asked, question), within_s=30)

    [original] = replies_to(ana, room, bot, asked)
    assert isinstance(original, RoomMessageNotice)
    edits = edits_of(ana, room, bot, original.event_id)
    partial = [original, *edits[:-1]]
    assert len(edits) >= 2 and all(e.source["content"]["m.new_content"]["body"].endswith("…") for e in edits[:-1])
    gaps = [b.server_timestamp - a.server_timestamp for a, b in itertools.pairwise(partial)]
    assert all(gap >= 900 for gap in gaps), f"partial edits closer than about a second: {gaps}"
    final = edits[-1].source["content"]["m.new_content"]
    assert final["msgtype"] == "m.notice" and final["format"] == "org.matrix.custom.html"
    assert final["formatted_body"].startswith(f"<p>You asked: {question}")
    assert bot in ana.typing.get(room, set()), "no typing notice while working"
    assert replies_to(ana, room, bot, before) == [], "history before the join was answered"
    assert not stranger.joined(strangers_room, bot), "joined a room on a stranger's invite"


async def test_encrypted_direct_chat_is_decrypted_and_answered_encrypted(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path
) -> None:
    ana = people["ana"]
    bot = await new_bot(synapse)
    async with bridge_for(settings_for(tmp_path, synapse, bot, people, fake_llm), history):
        room = await ana.create_room(invite=(bot,), encrypted=True)
        await eventually(lambda: ana.joined(room, bot))
        question = "What is the wifi password at the cabin?"
        asked = await ana.send(room, question)
        await eventually(lambda: final_answer(ana, room, bot, asked, question), within_s=30)
    raw = [e for e in ana.from_user(room, bot) if isinstance(e, RoomMessageNotice)]
    assert raw and all(getattr(e, "decrypted", False) for e in raw), "a reply in the encrypted room was not encrypted"


async def test_group_room_is_answered_only_when_mentioned_or_replied_to(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path
) -> None:
    ana, bea = people["ana"], people["bea"]
    bot = await new_bot(synapse)
    bot_name = bot.removeprefix("@").split(":")[0]  # Synapse's default display name is the localpart
    async with bridge_for(settings_for(tmp_path, synapse, bot, people, fake_llm), history):
        room = await ana.create_room(invite=(bot, bea.user_id), name="Family")
        await bea.join(room)
        await eventually(lambda: ana.joined(room, bot) and ana.joined(room, bea.user_id))

        lunch = await ana.send(room, "anyone for lunch?")
        by_pill = await ana.send(room, "when is grandma's dinner?", **{"m.mentions": {"user_ids": [bot]}})
        await eventually(lambda: final_answer(ana, room, bot, by_pill, "when is grandma's dinner?"))
        [answer] = replies_to(ana, room, bot, by_pill)
        bea_says = await bea.send(room, "I can bring dessert")
        to_bea = await ana.send(room, "great, thanks", **{"m.relates_to": {"m.in_reply_to": {"event_id": bea_says}}})
        by_name = await ana.send(room, f"{bot_name}: is the locker code still 1234?")  # a word, no mention
        in_passing = await ana.send(room, f"I would never tell {bot_name} my locker code")
        pill = f'<a href="https://matrix.to/#/{bot}">{bot_name}</a>: what is the locker code?'
        by_link = await ana.send(  # a client without m.mentions links the name (a pill)
            room, f"{bot_name}: what is the locker code?", format="org.matrix.custom.html", formatted_body=pill
        )
        follow_up = await ana.send(
            room, "and which gym?", **{"m.relates_to": {"m.in_reply_to": {"event_id": answer.event_id}}}
        )
        await eventually(lambda: final_answer(ana, room, bot, by_link, "what is the locker code?"))
        await eventually(lambda: final_answer(ana, room, bot, follow_up, "and which gym?"))
    for ignored in (lunch, bea_says, to_bea, by_name, in_passing):
        assert replies_to(ana, room, bot, ignored) == []


async def test_undecryptable_message_is_explained_once_and_answered_when_keys_arrive(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path
) -> None:
    ana = people["ana"]
    bot = await new_bot(synapse)
    async with bridge_for(settings_for(tmp_path, synapse, bot, people, fake_llm), history) as h:
        room = await ana.create_room(invite=(bot,), encrypted=True)
        await eventually(lambda: ana.joined(room, bot))
        await ana.housekeeping()
        # Ana's client withholds its megolm session from Confide's device: it encrypts, shares with nobody.
        olm = ana.client.olm
        assert olm is not None
        olm.create_outbound_group_session(room)
        session = olm.outbound_group_sessions[room]
        key = {"algorithm": "m.megolm.v1.aes-sha2", "room_id": room, "session_id": session.id,
               "session_key": session.session_key}  # fmt: skip
        session.shared = True
        first = await ana.send(room, "What is the door code?")
        second = await ana.send(room, "And the alarm code?")
        await eventually(lambda: len(replies_to(ana, room, bot, first)) == 1)
        [notice] = replies_to(ana, room, bot, first)
        assert "cannot read" in notice.source["content"]["body"]

        # Now Ana's client shares the session (from its first message on) with Confide's device.
        adapter: MatrixAdapter = h.adapter  # type: ignore[assignment]
        assert adapter.client is not None
        device = olm.device_store[bot][adapter.client.device_id]
        missing = ana.client.get_missing_sessions(room)
        if missing:
            await ana.client.keys_claim(missing)
        payload = olm._olm_encrypt(olm.session_store.get(device.curve25519), device, "m.room_key", key)
        await ana.client.to_device(ToDeviceMessage("m.room.encrypted", bot, device.id, payload))

        await eventually(lambda: final_answer(ana, room, bot, second, "And the alarm code?"), within_s=30)
        await eventually(lambda: final_answer(ana, room, bot, first, "What is the door code?"))
    told = [e for e in ana.from_user(room, bot) if "cannot read" in e.source["content"].get("body", "")]
    assert told == [notice], "the person was not told exactly once"
    assert len(replies_to(ana, room, bot, first)) == 2 and len(replies_to(ana, room, bot, second)) == 1


async def test_restart_answers_what_came_while_down_once(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path
) -> None:
    ana = people["ana"]
    bot = await new_bot(synapse)
    settings = settings_for(tmp_path, synapse, bot, people, fake_llm, sync_timeline_limit=2)
    async with bridge_for(settings, history) as h:
        room = await ana.create_room(invite=(bot,))
        await eventually(lambda: ana.joined(room, bot))
        first = await ana.send(room, "question one")
        await eventually(lambda: final_answer(ana, room, bot, first, "question one"))
    assert isinstance(h.adapter, MatrixAdapter)
    device = json.loads((tmp_path / "matrix" / "credentials.json").read_text())["device_id"]

    # Confide is down: more arrives than one sync's timeline holds (the limit is 2).
    later = {await ana.send(room, f"question {n}"): f"question {n}" for n in ("two", "three", "four", "five")}
    async with bridge_for(settings, history) as h:
        for event_id, question in later.items():
            await eventually(lambda e=event_id, q=question: final_answer(ana, room, bot, e, q), within_s=30)
        assert await h.inbox.unfinished() == 0
    for event_id in [first, *later]:
        assert len(replies_to(ana, room, bot, event_id)) == 1, f"{event_id} answered more or less than once"
    assert json.loads((tmp_path / "matrix" / "credentials.json").read_text())["device_id"] == device


async def test_a_fallback_is_edited_into_the_real_answer_once_the_model_is_back(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path
) -> None:
    ana = people["ana"]
    bot = await new_bot(synapse)
    fake_llm.default = Behaviour(status=503)
    settings = settings_for(tmp_path, synapse, bot, people, fake_llm)
    settings = settings.model_copy(update={"models": {"main": model_for(fake_llm, retries=0)}, "model_wait_s": 0})
    async with Harness(settings, history, build_adapter(settings), reanswer_every_s=0.3):  # type: ignore[arg-type]
        room = await ana.create_room(invite=(bot,))
        await eventually(lambda: ana.joined(room, bot))
        question = await ana.send(room, "where is the spare key?")
        await eventually(lambda: any(b.startswith("⚠ Model unavailable") for b in shown(ana, room, bot, question)))
        fake_llm.default = Behaviour()
        await eventually(lambda: any(b.startswith(FOLLOW_UP) for b in shown(ana, room, bot, question)), within_s=30)
    [reply] = replies_to(ana, room, bot, question)  # no second message: the fallback itself became the answer
    [edit] = [e for e in edits_of(ana, room, bot, reply.event_id) if FOLLOW_UP in e.source["content"]["body"]]
    assert reply.source["content"]["body"].startswith("⚠ Model unavailable")
    new_body = edit.source["content"]["m.new_content"]["body"]
    assert new_body.removeprefix(FOLLOW_UP).startswith("You asked: where is the spare key?")


async def test_rate_limited_sends_wait_and_nothing_is_dropped(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path
) -> None:
    ana = people["ana"]
    bot = await new_bot(synapse)
    await synapse.override_ratelimit(bot, messages_per_second=4, burst_count=1)
    async with bridge_for(settings_for(tmp_path, synapse, bot, people, fake_llm), history) as h:
        room = await ana.create_room(invite=(bot,))
        await eventually(lambda: ana.joined(room, bot))
        questions = {await ana.send(room, f"rate question {n}"): f"rate question {n}" for n in range(4)}
        for event_id, question in questions.items():
            await eventually(lambda e=event_id, q=question: final_answer(ana, room, bot, e, q), within_s=30)
        assert isinstance(h.adapter, MatrixAdapter)
        assert h.adapter.rate_limited > 0, "Synapse never answered 429: the test proves nothing"
    for event_id in questions:
        assert len(replies_to(ana, room, bot, event_id)) == 1


async def test_import_backfills_a_room_with_the_stored_device(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path,
    embedder: LocalEmbedder,
) -> None:  # fmt: skip
    ana = people["ana"]
    bot = await new_bot(synapse)
    settings = settings_for(tmp_path, synapse, bot, people, fake_llm)
    async with bridge_for(settings, history):
        room = await ana.create_room(invite=(bot,), encrypted=True, name="Cabin")
        await eventually(lambda: ana.joined(room, bot))
        asked = await ana.send(room, "The boiler was fixed by Mr. Okafor on 12 March.")
        await eventually(lambda: replies_to(ana, room, bot, asked))

    persons = json.dumps([{"id": "ana", "name": "Ana", "accounts": [f"matrix:{ana.user_id}"]}])
    env = cli_env(tmp_path / "cli", persons=persons, matrix__homeserver=synapse.url, matrix__user_id=bot,
                  matrix__password=PASSWORD, matrix__store_dir=str(tmp_path / "matrix"))  # fmt: skip
    (tmp_path / "cli").mkdir()
    for expected in ("Imported 1, already there 0", "Imported 0, already there 1"):
        result = await run_cli(["import", "matrix", "--room", room, "--person", "ana"], env)
        assert result.code == 0, result.stderr
        assert expected in result.stderr and "could not be decrypted" not in result.stderr, result.stderr

    store = EdgeStore(tmp_path / "cli" / "qdrant")
    await store.open(embedder.dimension)
    try:
        records = [r async for r in HistoryIndex(store, embedder).export("ana")]
    finally:
        await store.close()
    [record] = records  # twice imported, stored once; Confide's own answers are not imported
    assert record.text == "The boiler was fixed by Mr. Okafor on 12 March."
    assert record.channel == "matrix" and record.conversation == "Cabin" and record.source == f"matrix:{room}"
    assert record.link == f"https://matrix.to/#/{room}/{asked}" and record.author == ana.localpart


async def test_import_backfills_a_group_into_the_rooms_own_history(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path,
    embedder: LocalEmbedder,
) -> None:  # fmt: skip
    """`--group`: what members said before Confide joined becomes the room's history, under the ids the live
    adapter gives; a question indexed live is not added twice; nothing enters a person's own history."""
    ana, bea, stranger = people["ana"], people["bea"], people["stranger"]
    bot = await new_bot(synapse)
    async with bridge_for(settings_for(tmp_path, synapse, bot, people, fake_llm), history):
        room = await ana.create_room(invite=(bea.user_id, stranger.user_id), name="Picnic")
        await bea.join(room)
        await stranger.join(room)
        await bea.send(room, "The picnic is at noon by the old harbour.")
        await stranger.send(room, "I will bring the lemonade.")
        await ana.send(room, "/poll who comes?")  # a command: none of the room's talk
        await ana.invite(room, bot)
        await eventually(lambda: ana.joined(room, bot))
        asked = await ana.send(room, "when is the picnic?", **{"m.mentions": {"user_ids": [bot]}})
        await eventually(lambda: done(ana, room, bot, asked), within_s=30)
    scope = f"room:matrix:{room}"
    live = [r async for r in history.export(scope)]
    assert [r.text for r in live] == ["when is the picnic?"], "the live adapter indexed more or less than the question"

    (tmp_path / "cli").mkdir()
    store = EdgeStore(tmp_path / "cli" / "qdrant")
    await store.open(embedder.dimension)
    await store.record_embedder(embedder.identity.as_dict())  # as HistoryIndex.open records it
    try:
        await HistoryIndex(store, embedder).add(scope, live)  # the CLI's index holds what the live bridge indexed
    finally:
        await store.close()
    persons = json.dumps(
        [{"id": n, "name": n.title(), "accounts": [f"matrix:{people[n].user_id}"]} for n in ("ana", "bea")]
    )
    env = cli_env(tmp_path / "cli", persons=persons, matrix__homeserver=synapse.url, matrix__user_id=bot,
                  matrix__password=PASSWORD, matrix__store_dir=str(tmp_path / "matrix"))  # fmt: skip
    both = await run_cli(["import", "matrix", "--room", room, "--group", "--person", "ana"], env)
    assert both.code == 2 and "either --person" in both.stderr, both.stderr
    for expected in ("Imported 2, already there 0", "Imported 0, already there 2"):
        result = await run_cli(["import", "matrix", "--room", room, "--group"], env)
        assert result.code == 0, result.stderr
        assert expected in result.stderr, result.stderr

    store = EdgeStore(tmp_path / "cli" / "qdrant")
    await store.open(embedder.dimension)
    try:
        index = HistoryIndex(store, embedder)
        records = sorted([r async for r in index.export(scope)], key=lambda r: r.time)
        own = await index.count("ana") + await index.count("bea")
    finally:
        await store.close()
    assert [(r.author, r.text) for r in records] == [
        ("Bea", "The picnic is at noon by the old harbour."),
        (stranger.user_id, "I will bring the lemonade."),
        ("Ana", "when is the picnic?"),
    ]
    assert all(r.id.startswith("m:matrix:") and r.source == f"matrix:{room}" for r in records[:2]), records
    assert own == 0, "a group's backfill entered a person's own history"


@pytest.mark.parametrize("mode", ["plain", "encrypted", "tampered"])
async def test_a_document_sent_in_a_direct_chat_is_fetched_and_imported(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path,
    mode: str,
) -> None:  # fmt: skip
    """Fetched, decrypted in an encrypted room, hash-checked (a file that does not match its hash is refused)."""
    ana, encrypted = people["ana"], mode != "plain"
    bot = await new_bot(synapse)
    note = f"# Cabin\n\nThe wifi password at the cabin is otter-{mode}-42.\n".encode()
    async with bridge_for(settings_for(tmp_path, synapse, bot, people, fake_llm), history):
        room = await ana.create_room(invite=(bot,), encrypted=encrypted)
        await eventually(lambda: ana.joined(room, bot))
        uploaded, keys = await ana.client.upload(
            io.BytesIO(note), content_type="text/markdown", filename="notes.md", encrypt=encrypted, filesize=len(note)
        )
        assert isinstance(uploaded, UploadResponse), uploaded
        if mode == "tampered":
            assert keys is not None
            keys["hashes"]["sha256"] = "A" * 43  # not the hash of what the homeserver holds
        where = {"file": {**(keys or {}), "url": uploaded.content_uri}} if encrypted else {"url": uploaded.content_uri}
        sent = await ana.send(room, "notes.md", msgtype="m.file", info={"mimetype": "text/markdown"}, **where)
        await eventually(lambda: replies_to(ana, room, bot, sent), within_s=30)

    [reply] = replies_to(ana, room, bot, sent)
    body = reply.source["content"]["body"]
    assert getattr(reply, "decrypted", False) == encrypted
    texts = [r.text async for r in history.export("ana")]
    saved = list((tmp_path / "attachments" / "matrix").rglob("*notes.md"))
    if mode == "tampered":
        assert body.startswith("notes.md: I could not get the file itself"), body
        assert saved == [] and texts == []
        return
    assert body.startswith("Imported 1"), body
    assert [p.read_bytes() for p in saved] == [note]  # decrypted where the room is encrypted
    assert any(f"otter-{mode}-42" in text for text in texts), texts


def done(person: Person, room_id: str, bot: str, event_id: str) -> str | None:
    """The final text of the bot's reply to an event (None while there is none, or it is still growing)."""
    bodies = shown(person, room_id, bot, event_id)
    return bodies[-1] if bodies and "…" not in bodies[-1] else None


async def test_a_private_secret_reaches_a_group_room_only_while_its_owner_shares_it(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path
) -> None:
    """Two persons and a member who is none: whoever asks, the room's answers come from the room's own talk;
    Ana's own history only between her /share and /unshare, and /share names who is in the room."""
    ana, bea, stranger = people["ana"], people["bea"], people["stranger"]
    secret = "31-41-59"
    note = HistoryRecord(id="s1", person="ana", channel="files", conversation="Notes", author="me",
                         text=f"The combination of the safe is {secret}.", time=datetime(2024, 5, 3, tzinfo=UTC),
                         source="notes.txt")  # fmt: skip
    await history.add("ana", [note])
    bot = await new_bot(synapse)
    pill = {"m.mentions": {"user_ids": [bot]}}

    async def ask(person: Person, text: str) -> str:
        event_id = await person.send(room, text, **pill)
        await eventually(lambda: done(ana, room, bot, event_id), within_s=30)
        return done(ana, room, bot, event_id) or ""

    def retrieved() -> str:
        return retrieved_history(fake_llm.requests[-1])  # the excerpts

    async with bridge_for(settings_for(tmp_path, synapse, bot, people, fake_llm), history):
        room = await ana.create_room(invite=(bot, bea.user_id, stranger.user_id), name="Family")
        await bea.join(room)
        await stranger.join(room)
        await eventually(lambda: all(ana.joined(room, u) for u in (bot, bea.user_id, stranger.user_id)))
        await bea.send(room, "The picnic is at noon by the old safe harbour.")
        replies = [await ask(ana, "what is the combination of the safe?")]
        replies.append(await ask(bea, "do you know the combination of the safe?"))
        unshared = list(fake_llm.requests)
        from_stranger = await stranger.send(room, "what is the combination of the safe?", **pill)
        shared = await ask(ana, "/share")
        await ask(bea, "which combination opens the safe?")
        while_shared = retrieved()
        await ask(ana, "/unshare")
        replies.append(await ask(bea, "the combination of the safe, please?"))
        after_unshare = retrieved()
    assert len(unshared) == 2 and all(secret not in str(r["messages"]) for r in unshared)
    assert all(reply and secret not in reply for reply in replies), replies
    assert all(name in shared for name in (ana.localpart, bea.localpart, stranger.localpart)), shared
    assert secret in while_shared and secret not in after_unshare
    assert replies_to(ana, room, bot, from_stranger) == [], "a member who is no person was answered"
    assert await history.count("ana") == 1, "a question asked in the room joined the asker's own history"


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain room", "encrypted room"])
async def test_compare_posts_its_chart_as_an_image_encrypted_where_the_room_is(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path,
    encrypted: bool,
) -> None:  # fmt: skip
    ana = people["ana"]
    bot = await new_bot(synapse)
    other = await FakeOpenAI(model="other-model", answer=lambda m: "The key is under the pot [1]").start()
    settings = settings_for(tmp_path, synapse, bot, people, fake_llm)
    settings = settings.model_copy(update={"models": {**settings.models, "other": model_for(other)}})
    try:
        async with bridge_for(settings, history):
            room = await ana.create_room(invite=(bot,), encrypted=encrypted)
            await eventually(lambda: ana.joined(room, bot))
            asked = await ana.send(room, "/compare main other Where is the spare key?")
            await eventually(lambda: [e for e in ana.from_user(room, bot) if _is_image(e)], within_s=40)
    finally:
        await other.stop()
    [image] = [e for e in ana.from_user(room, bot) if _is_image(e)]
    content = image.source["content"]
    assert isinstance(image, RoomEncryptedImage if encrypted else RoomMessageImage), type(image)
    assert getattr(image, "decrypted", False) == encrypted
    png = await _downloaded(ana, image)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and struct.unpack(">II", png[16:24]) == (800, 450)
    info = content["info"]
    assert (info["mimetype"], info["w"], info["h"], info["size"]) == ("image/png", 800, 450, len(png))
    assert "main" in image.body and "other" in image.body, f"the image's description names neither model: {image.body}"
    text, picture = shown(ana, room, bot, asked)  # both reply to the question; the text shows its last edit
    assert text.startswith("Comparing main and other on: “Where is the spare key?”") and picture == image.body


def _is_image(event: Event) -> bool:
    return isinstance(event, RoomMessageImage | RoomEncryptedImage)


async def _downloaded(person: Person, image: Event) -> bytes:
    """The picture as the person's client shows it: fetched from the media repository, decrypted if it is."""
    url = image.url
    server, _, media_id = url.removeprefix("mxc://").partition("/")
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(
            f"{person.synapse.url}/_matrix/client/v1/media/download/{server}/{media_id}",
            headers={"Authorization": f"Bearer {person.client.access_token}"},
        )
    response.raise_for_status()
    if isinstance(image, RoomEncryptedImage):
        return decrypt_attachment(response.content, image.key["k"], image.hashes["sha256"], image.iv)
    return response.content


async def test_a_voice_message_in_an_encrypted_direct_chat_is_heard_and_answered(
    synapse: Synapse, people: dict[str, Person], fake_llm: FakeOpenAI, history: HistoryIndex, tmp_path: Path
) -> None:
    ana = people["ana"]
    bot = await new_bot(synapse)
    transcriber = {"backend": "openai", "base_url": fake_llm.base_url, "model": fake_llm.model}
    settings = settings_for(tmp_path, synapse, bot, people, fake_llm).model_copy(
        update={"transcriber": TranscriberSettings(**transcriber)}
    )
    hearing = Hearing(OpenAITranscriber(settings.transcriber), settings.transcriber.max_audio_bytes)
    speech = b"SPEECH:Where is the spare key?"
    try:
        async with Harness(settings, history, build_adapter(settings), hearing=hearing):  # type: ignore[arg-type]
            room = await ana.create_room(invite=(bot,), encrypted=True)
            await eventually(lambda: ana.joined(room, bot))
            uploaded, keys = await ana.client.upload(
                io.BytesIO(speech), content_type="audio/ogg", filename="voice.ogg", encrypt=True, filesize=len(speech)
            )
            assert isinstance(uploaded, UploadResponse) and keys is not None, uploaded
            info = {"mimetype": "audio/ogg", "size": len(speech), "duration": 2000}
            file = {**keys, "url": uploaded.content_uri}
            sent = await ana.send(room, "Voice message", msgtype="m.audio", info=info, file=file)
            await eventually(lambda: done(ana, room, bot, sent), within_s=30)
    finally:
        await hearing.transcriber.close()
    assert (done(ana, room, bot, sent) or "").startswith("🎤 “Where is the spare key?”\n\nYou asked: Where is")
    assert [t["size"] for t in fake_llm.transcriptions] == [len(speech)], "not the decrypted file, or not once"
    [asked] = [r async for r in history.export("ana") if r.id.startswith("q:")]
    assert asked.text == "Where is the spare key?" and asked.transcribed is True
