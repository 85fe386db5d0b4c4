"""The Telegram adapter end to end in-process: a real dispatcher (Harness) around it, a Bot API server on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import struct
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from telegram.error import Forbidden, NetworkError

from adapters.telegram import build_adapter
from adapters.telegram.bot import MENU_LANGUAGES
from adapters.telegram.redact import REDACTED
from adapters.telegram.settings import TelegramSettings
from bridge.answering.answer import UNSUPPORTED
from bridge.commands.handlers import HELP
from bridge.history.index import HistoryIndex
from bridge.intake.hearing import NOT_HEARD, NOTHING_HEARD, Hearing
from bridge.messages import HistoryRecord, Image, OutgoingReply
from bridge.models.transcriber import OpenAITranscriber
from tests.fakes.bot_api import BOT_ID, FakeTelegram
from tests.fakes.inbox import RecordingInbox
from tests.fakes.openai_server import Behaviour, FakeOpenAI, retrieved_history
from tests.harness import Harness
from tests.helpers import eventually, make_settings, model_for, plain_png
from tests.import_fixtures import ogg_opus

GROUP = -5
SECRET = "webhook-secret-0123456789"


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def telegram_settings(fake: FakeTelegram, **fields: Any) -> TelegramSettings:
    values: dict[str, Any] = {"enabled": True, "token": fake.token, "api_base_url": fake.base_url,
                              "poll_timeout_s": 5, "edit_interval_s": 0.2}  # fmt: skip
    values.update(fields)
    return TelegramSettings(**values)


@asynccontextmanager
async def delivering(tmp_path: Path, fake: FakeTelegram) -> AsyncIterator[Any]:
    """The adapter alone, as assembly leaves it for delivery: its tables in the state database handed over."""
    from adapters.telegram import PLATFORM
    from bridge.state.db import StateDB

    settings = make_settings(tmp_path, {}, telegram=telegram_settings(fake))
    db = StateDB(settings.state_path)
    await db.open()
    try:
        adapter = build_adapter(settings)
        await adapter.attach_state(await db.platform_state(PLATFORM.name, PLATFORM.migrations))
        yield adapter
    finally:
        await db.close()


@asynccontextmanager
async def bridge(
    tmp_path: Path, history: HistoryIndex, llm: FakeOpenAI, fake: FakeTelegram, **fields: Any
) -> AsyncIterator[Harness]:
    settings = make_settings(tmp_path, {"main": model_for(llm)}, telegram=telegram_settings(fake, **fields))
    async with Harness(settings, history, build_adapter(settings)) as h:  # type: ignore[arg-type]
        yield h


async def settled(h: Harness, fake: FakeTelegram) -> bool:
    """Every pushed update is confirmed, worked and its reply delivered."""
    pushed = max((u["update_id"] for u in fake.updates), default=0)
    return fake.confirmed >= pushed and await h.inbox.unfinished() == 0 and await h.outbox.unsent("telegram") == 0


async def answered(h: Harness, fake: FakeTelegram, chat_id: int, count: int = 1) -> bool:
    return await settled(h, fake) and len(fake.bot_messages(chat_id)) >= count


SPARE_KEY = HistoryRecord(id="n1", person="alice", channel="whatsapp", conversation="Family", author="Anna",
                          text="The spare key is under the blue flower pot.", time=datetime(2024, 5, 3, tzinfo=UTC),
                          source="whatsapp:family.zip")  # fmt: skip


@asynccontextmanager
async def hearing_bridge(
    tmp_path: Path, history: HistoryIndex, llm: FakeOpenAI, fake: FakeTelegram, **transcriber: Any
) -> AsyncIterator[Harness]:
    """The bridge with voice messages heard: the tests' model server also speaks Whisper's endpoint."""
    transcriber = {"backend": "openai", "base_url": llm.base_url, "model": llm.model, **transcriber}
    settings = make_settings(tmp_path, {"main": model_for(llm)}, telegram=telegram_settings(fake),
                             transcriber=transcriber)  # fmt: skip
    hearing = Hearing(OpenAITranscriber(settings.transcriber), settings.transcriber.max_audio_bytes)
    try:
        async with Harness(settings, history, build_adapter(settings), hearing=hearing) as h:  # type: ignore[arg-type]
            yield h
    finally:
        await hearing.transcriber.close()


def mention(text: str, name: str = "@confide_bot") -> list[dict[str, Any]]:
    return [{"type": "mention", "offset": text.index(name), "length": len(name)}]


def command(text: str) -> list[dict[str, Any]]:
    return [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]


async def test_private_question_by_polling_is_answered_with_sources_and_confirmed(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    await history.add("alice", [SPARE_KEY])
    async with bridge(tmp_path, history, fake_llm, telegram) as h:
        update = telegram.push_message(100, "Where is the spare key? 1 < 2 & <b>bold</b>")
        await eventually(lambda: telegram.bot_messages(100))
        await eventually(lambda: settled(h, telegram))
    [reply] = telegram.bot_messages(100)
    answer, _, sources = reply.text.partition("\n\nSources:\n")
    expected = f"You asked: Where is the spare key? 1 < 2 & <b>bold</b> {SPARE_KEY.text} [1]"
    assert answer == expected, "markup in the text must be escaped"
    assert "whatsapp:family.zip" in sources and reply.parse_mode == "HTML" and "<b>Sources:</b>" in reply.raw
    assert reply.reply_to == update["message"]["message_id"]
    methods = telegram.methods()
    menus = 1 + len(MENU_LANGUAGES)  # the default menu, then one per catalog language
    assert methods[: menus + 3] == ["getMe", *["setMyCommands"] * menus, "deleteWebhook", "getUpdates"]
    menu = ["help", "reset", "sources", "forget", "model", "compare", "usage", "share", "unshare"]
    assert [c["command"] for c in commands_set(telegram)[None]] == menu
    assert [c.params["action"] for c in telegram.calls_of("sendChatAction")] == ["typing"]
    assert telegram.confirmed == update["update_id"]


def commands_set(fake: FakeTelegram) -> dict[str | None, list[dict[str, str]]]:
    """Each setMyCommands' commands by its language_code (None: the default menu, for every other language)."""
    menus = {}
    for call in fake.calls_of("setMyCommands"):
        commands = call.params["commands"]  # a JSON string in a form post, a list in a JSON body
        menus[call.params.get("language_code")] = json.loads(commands) if isinstance(commands, str) else commands
    return menus


async def test_the_command_menu_is_set_in_english_and_in_every_catalog_language(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    """A German app shows the menu in German (Telegram picks the menu by the app's language_code)."""
    async with bridge(tmp_path, history, fake_llm, telegram):
        await eventually(lambda: len(telegram.calls_of("setMyCommands")) == 1 + len(MENU_LANGUAGES))
    menus = commands_set(telegram)
    assert list(menus) == [None, "it", "de", "fr", "es", "nl"], "the default first, without a language_code"
    english = {c["command"]: c["description"] for c in menus[None]}
    german = {c["command"]: c["description"] for c in menus["de"]}
    assert english["help"] == "What I can do (this text)"
    assert german["help"] == "Was ich kann (dieser Text)"
    assert german["model"] == "Modell für diesen Chat anzeigen oder wählen: [NAME]"
    assert list(german) == list(english) and all(german[name] != english[name] for name in english)
    for commands in menus.values():  # Telegram's limits, in every language
        assert all(1 <= len(c["description"]) <= 256 for c in commands)


async def test_groups_are_answered_only_when_addressed_and_strangers_never(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    group = {"chat_id": GROUP, "chat_type": "supergroup"}
    async with bridge(tmp_path, history, fake_llm, telegram) as h:
        telegram.push_message(100, "anyone for lunch?", **group)
        asked = "@confide_bot when is grandma's dinner?"
        telegram.push_message(100, asked, entities=mention(asked), **group)
        await eventually(lambda: telegram.bot_messages(GROUP))
        answer = telegram.bot_messages(GROUP)[0]
        bot_message = {"message_id": answer.message_id, "date": 0, "chat": {"id": GROUP, "type": "supergroup"},
                       "from": {"id": BOT_ID, "is_bot": True, "first_name": "Confide"},
                       "text": answer.text}  # fmt: skip
        telegram.push_message(200, "and where?", reply_to_message=bot_message, **group)
        telegram.push_message(100, "/help@confide_bot", entities=command("/help@confide_bot"), **group)
        telegram.push_message(100, "/help@other_bot", entities=command("/help@other_bot"), **group)
        telegram.push_message(
            100, "what about @someone_else", entities=mention("@someone_else", "@someone_else"), **group
        )
        telegram.push_message(666, "What is the locker code?")
        await eventually(lambda: settled(h, telegram))
    texts = [m.text for m in telegram.bot_messages(GROUP)]
    # Answered from the group's own talk (so its excerpts are in the prompt the fake model echoes).
    assert texts[0].startswith("You asked:") and "when is grandma's dinner?" in texts[0]
    assert "@confide_bot" not in texts[0], "the bot's name is stripped from the question"
    assert texts[1].startswith("You asked:") and "and where?" in texts[1]
    assert texts[2] == HELP
    assert len(texts) == 3
    assert telegram.bot_messages(666) == [] and len(fake_llm.requests) == 2


async def test_private_answer_streams_as_a_draft_and_the_final_message_wins(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    words = " ".join(f"word{i}" for i in range(40))
    fake_llm.default = Behaviour(text=words, chunk_delay_s=0.03)
    async with bridge(tmp_path, history, fake_llm, telegram) as h:
        telegram.push_message(100, "tell me a long story")
        await eventually(lambda: answered(h, telegram, 100))
    drafts = telegram.drafts[100]
    assert len(drafts) >= 2 and all(words.startswith(d) for d in drafts), drafts
    assert {c.params["draft_id"] for c in telegram.calls_of("sendMessageDraft")} == {"1"}
    [final] = telegram.bot_messages(100)
    assert final.text == words and telegram.calls_of("editMessageText") == []


async def test_without_drafts_one_message_is_edited_even_through_a_429(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    telegram.drafts_supported = False  # a Bot API server without sendMessageDraft: 404, as for any unknown method
    words = " ".join(f"word{i}" for i in range(60))
    fake_llm.default = Behaviour(text=words, chunk_delay_s=0.04)
    telegram.fail("editMessageText", 429, "Too Many Requests: retry after 1", retry_after=1, after=1)
    async with bridge(tmp_path, history, fake_llm, telegram) as h:
        telegram.push_message(100, "tell me a long story")
        await eventually(lambda: answered(h, telegram, 100))
    [message] = telegram.bot_messages(100)
    assert message.text == words, "the final text arrives complete"
    assert len(message.edits) >= 3 and all(words.startswith(e) for e in message.edits), message.edits
    edits = telegram.calls_of("editMessageText")
    assert edits[2].at - edits[1].at >= 1.0, "after the 429 the same edit waited retry_after, then went on"
    assert edits[2].params["text"] == edits[1].params["text"]


async def test_a_long_answer_is_split_at_a_paragraph_and_the_first_part_replaces_the_draft(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    paragraphs = [f"Paragraph {n}. " + " ".join(["lorem ipsum dolor"] * 27) for n in range(12)]
    text = "\n\n".join(paragraphs)
    assert 5900 < len(text) < 6200
    fake_llm.default = Behaviour(text=text, chunk_delay_s=0.001)
    asked = "@confide_bot tell me everything"
    async with bridge(tmp_path, history, fake_llm, telegram) as h:
        telegram.push_message(100, "the group's own talk, to answer from", chat_id=GROUP, chat_type="group")
        telegram.push_message(100, asked, chat_id=GROUP, chat_type="group", entities=mention(asked))
        await eventually(lambda: answered(h, telegram, GROUP, 2))
    first, second = telegram.bot_messages(GROUP)
    assert len(first.text) <= 4096 and len(second.text) <= 4096
    cut = first.text.count("\n\n") + 1
    # no message of the group says the lorem ipsum: the answer cites none, and says so at its end
    answer_end = second.text.removesuffix(f"\n\n{UNSUPPORTED}")
    assert first.text == "\n\n".join(paragraphs[:cut]) and answer_end == "\n\n".join(paragraphs[cut:])
    assert len(first.edits) >= 2, "the first part was the streamed message, edited into place"
    assert second.reply_to is None and first.reply_to is not None


async def test_a_parse_error_falls_back_to_plain_text(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    telegram.fail("sendMessage", 400, "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 3",
                  only_formatted=True)  # fmt: skip
    async with bridge(tmp_path, history, fake_llm, telegram) as h:
        telegram.push_message(100, "/help")
        await eventually(lambda: answered(h, telegram, 100))
    [reply] = telegram.bot_messages(100)
    assert reply.text == HELP and reply.parse_mode is None
    assert [c.params.get("parse_mode") for c in telegram.calls_of("sendMessage")] == ["HTML", None]


async def test_a_document_is_downloaded_and_imported(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    """Against the core's import contract: an attachment with no text is imported, the reply says 'Imported'."""
    content = b"# Cabin\n\nThe wifi password at the cabin is blue-otter-42.\n"
    file_id = telegram.add_file("notes.md", content)
    document = {"file_id": file_id, "file_unique_id": "u1", "file_name": "notes.md", "mime_type": "text/markdown",
                "file_size": len(content)}  # fmt: skip
    async with bridge(tmp_path, history, fake_llm, telegram) as h:
        update = telegram.push_message(100, document=document)
        await eventually(lambda: settled(h, telegram))
        saved = tmp_path / "attachments" / "telegram" / "100" / f"{update['message']['message_id']}-notes.md"
        assert saved.read_bytes() == content
        assert [c.params["file_id"] for c in telegram.calls_of("getFile")] == [file_id]
        [reply] = telegram.bot_messages(100)
        assert reply.text.startswith("Imported "), reply.text


class GroupTelegram(FakeTelegram):
    """The Bot API server with what /share asks of a group: its size and its administrators (the only members
    Telegram lists)."""

    def _m_getChatMemberCount(self, params: dict[str, Any]) -> int:
        return 4  # Alice (the owner), Bob, a member who is no person, and the bot

    def _m_getChatAdministrators(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        owner = {"id": 100, "is_bot": False, "first_name": "Alice"}
        return [{"status": "creator", "user": owner, "is_anonymous": False}]


async def test_a_private_secret_reaches_a_group_only_while_its_owner_shares_it(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI
) -> None:
    telegram = await GroupTelegram().start()
    secret = "31-41-59"
    note = HistoryRecord(id="s1", person="alice", channel="files", conversation="Notes", author="me",
                         text=f"The combination of the safe is {secret}.", time=datetime(2024, 5, 3, tzinfo=UTC),
                         source="notes.txt")  # fmt: skip
    await history.add("alice", [note])
    group = {"chat_id": GROUP, "chat_type": "supergroup"}

    def prompts() -> list[str]:
        return ["\n".join(m["content"] for m in r["messages"]) for r in fake_llm.requests]

    async def ask(h: Harness, user_id: int, text: str, entities: list[dict[str, Any]]) -> str:
        before = len(telegram.bot_messages(GROUP))
        telegram.push_message(user_id, text, entities=entities, **group)
        await eventually(lambda: answered(h, telegram, GROUP, before + 1))
        return telegram.bot_messages(GROUP)[-1].text

    question = "@confide_bot what is the combination of the safe?"
    try:
        async with bridge(tmp_path, history, fake_llm, telegram) as h:
            telegram.push_message(200, "the picnic is at noon by the safe harbour", **group)
            for user_id in (100, 200):
                assert (await ask(h, user_id, question, mention(question))).startswith("You asked:")
            telegram.push_message(666, question, entities=mention(question), **group)  # no person: no answer
            await eventually(lambda: settled(h, telegram))
            unshared = len(fake_llm.requests)
            shared = await ask(h, 100, "/share@confide_bot", command("/share@confide_bot"))
            await ask(h, 200, question, mention(question))
            while_shared = prompts()[-1]
            shared_answer = telegram.bot_messages(GROUP)[-1].message_id
            await ask(h, 100, "/unshare@confide_bot", command("/unshare@confide_bot"))
            await ask(h, 200, question, mention(question))
    finally:
        await telegram.stop()
    assert unshared == 2 and all(secret not in p for p in prompts()[:unshared])
    assert "This group has 3 member(s) besides me" in shared and "Alice" in shared, shared
    assert secret in while_shared, "after /share the group's answers may use Alice's history"
    # Retrieval, that is: Bob's own earlier turns (the answer he was given while it was shared) stay his memory.
    assert secret not in retrieved_history(fake_llm.requests[-1]), "after /unshare they may not"
    assert all(secret not in m.text for m in telegram.bot_messages(GROUP) if m.message_id != shared_answer)
    assert len(telegram.bot_messages(666)) == 0 and len(telegram.bot_messages(GROUP)) == 6


async def test_media_become_attachments_with_their_mime_types(tmp_path: Path, telegram: FakeTelegram) -> None:
    settings = make_settings(tmp_path, {}, telegram=telegram_settings(telegram))
    adapter = build_adapter(settings)
    inbox = RecordingInbox()
    report = telegram.add_file("../../report.pdf", b"%PDF-1.4 fake")
    document = {"file_id": report, "file_unique_id": "u2", "file_name": "../../report.pdf",
                "mime_type": "application/pdf"}  # fmt: skip
    telegram.push_message(100, caption="what is in it?", document=document)
    telegram.push_message(100, photo=[{"file_id": "p-small", "file_unique_id": "ps", "width": 90, "height": 90},
                                      {"file_id": "p-big", "file_unique_id": "pb", "width": 800, "height": 600,
                                       "file_size": 4000}])  # fmt: skip
    telegram.push_message(
        100, voice={"file_id": "v1", "file_unique_id": "v1u", "duration": 3, "mime_type": "audio/ogg"}
    )
    stranger_file = telegram.add_file("s.txt", b"from a stranger")
    telegram.push_message(999, document={"file_id": stranger_file, "file_unique_id": "s1", "file_name": "s.txt"})
    group_file = telegram.add_file("g.txt", b"in a group")
    telegram.push_message(100, chat_id=-5, chat_type="group",
                          document={"file_id": group_file, "file_unique_id": "g1", "file_name": "g.txt"})  # fmt: skip
    running = asyncio.create_task(adapter.run(inbox))
    try:
        await eventually(lambda: len(inbox.messages) == 5)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    # Only a known person's documents are downloaded (a group's into the group's history); a stranger's never.
    assert inbox.messages[3].attachments[0].path is None and inbox.messages[4].attachments[0].path is not None
    assert [c.params["file_id"] for c in telegram.calls_of("getFile")] == [report, group_file]
    pdf, photo, voice = (m.attachments[0] for m in inbox.messages[:3])
    assert inbox.messages[0].text == "what is in it?" and pdf.mime_type == "application/pdf"
    assert pdf.path is not None and read_bytes(pdf.path) == b"%PDF-1.4 fake"
    folder, name = os.path.split(pdf.path)
    assert folder == str(tmp_path / "attachments" / "telegram" / "100") and name.endswith("report.pdf")
    assert (photo.mime_type, photo.size, photo.path) == ("image/jpeg", 4000, None)
    assert (voice.mime_type, voice.path) == ("audio/ogg", None)
    assert [m.platform_message_id for m in inbox.messages[:3]] == ["100:1", "100:2", "100:3"]


async def test_webhook_mode_checks_the_secret_and_answers_only_after_storing(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    webhook = {"mode": "webhook", "webhook_url": url, "webhook_port": port, "webhook_secret": SECRET}
    forged = {"update_id": 900, "message": {"message_id": 900, "date": 0, "chat": {"id": 100, "type": "private"},
              "from": {"id": 100, "is_bot": False, "first_name": "A"}, "text": "forged question"}}  # fmt: skip
    async with bridge(tmp_path, history, fake_llm, telegram, **webhook) as h:
        await eventually(lambda: telegram.webhook is not None)
        assert telegram.webhook == {"url": url, "secret_token": SECRET, "max_connections": "40"}
        assert await telegram.post_to_webhook(forged, secret="wrong") == 403
        assert await telegram.post_to_webhook(forged, secret=None) == 403
        telegram.push_message(100, "a real question")  # Telegram posts it with the secret
        await eventually(lambda: answered(h, telegram, 100))
    assert [m.text for m in telegram.bot_messages(100)] == ["You asked: a real question"]  # nothing to cite
    assert telegram.webhook_statuses == [200] and len(fake_llm.requests) == 1
    assert "getUpdates" not in telegram.methods()


async def test_delivery_is_idempotent_and_resumes_after_a_failed_part(tmp_path: Path, telegram: FakeTelegram) -> None:
    async with delivering(tmp_path, telegram) as adapter:
        text = "\n\n".join(f"Part {n}. " + "x " * 1500 for n in range(2))
        reply = OutgoingReply(reply_id="r1", channel="telegram", chat_id="100", text=text,
                              extra={"chat_id": 100, "message_id": 7})  # fmt: skip
        telegram.fail("sendMessage", 500, "Internal Server Error", after=1)
        with pytest.raises(NetworkError):
            await adapter.deliver(reply)
        assert len(telegram.bot_messages(100)) == 1
        receipt = await adapter.deliver(reply)
        assert await adapter.deliver(reply) == receipt == "100:1"
        assert [m.text.split(".")[0] for m in telegram.bot_messages(100)] == ["Part 0", "Part 1"]
        # An edit to the text the message already shows ("message is not modified") is a success.
        short = reply.model_copy(update={"reply_id": "r2", "text": "Short answer", "edit_token": "m:1"})
        await adapter.deliver(short)
        again = short.model_copy(update={"reply_id": "r3"})  # the same edit again: Telegram says "not modified"
        assert await adapter.deliver(again) == "100:1"
        assert len(telegram.calls_of("editMessageText")) == 2 and len(telegram.bot_messages(100)) == 2
        assert telegram.bot_messages(100)[0].text == "Short answer"
        await adapter.bot.shutdown()


async def test_a_part_cut_off_by_a_stop_is_sent_again_and_counted_in_doubt(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """Telegram took the message, then the process stopped before its id was recorded: the Bot API cannot list the
    chat to check, so the part goes again, counted and logged as in doubt; a refused send is no doubt."""
    reply = OutgoingReply(reply_id="r9", channel="telegram", chat_id="100", text="The key is under the pot.",
                          extra={"chat_id": 100})  # fmt: skip
    telegram.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
    async with delivering(tmp_path, telegram) as first:
        with pytest.raises(Forbidden):
            await first.deliver(reply)
        assert await first._sent.begin("r9", 0) is False, "a refused send was left in doubt"
        await first._send(100, reply.text, reply.extra, reply_to=False)  # Telegram takes it; the stop comes now
        await first.bot.shutdown()
    async with delivering(tmp_path, telegram) as restarted:
        receipt = await restarted.deliver(reply)
        assert await restarted.deliver(reply) == receipt  # retried once more: nothing is sent
        await restarted.bot.shutdown()
    assert restarted.in_doubt == 1
    assert [m.text for m in telegram.bot_messages(100)] == ["The key is under the pot."] * 2


async def test_the_token_never_reaches_the_logs(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    telegram.fail("sendChatAction", 502, "Bad Gateway")
    telegram.fail("sendMessage", 500, "Internal Server Error")  # the first delivery fails, is logged, is retried
    async with bridge(tmp_path, history, fake_llm, telegram) as h:
        telegram.push_message(100, "where is the key?")
        await eventually(lambda: answered(h, telegram, 100), within_s=15)
    secret_part = telegram.token.partition(":")[2]
    logged = caplog.text + "".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "typing notice failed" in logged and "delivering reply" in logged, "the failures were logged"
    assert REDACTED in logged, "the request URLs were logged, redacted"
    assert secret_part not in logged


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_compare_sends_its_chart_as_a_photo_after_the_text(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    other = await FakeOpenAI(model="other-model", answer=lambda m: "The key is under the pot [1]").start()
    models = {"main": model_for(fake_llm), "other": model_for(other)}
    settings = make_settings(tmp_path, models, telegram=telegram_settings(telegram))
    try:
        async with Harness(settings, history, build_adapter(settings)) as h:  # type: ignore[arg-type]
            text = "/compare main other Where is the spare key?"
            telegram.push_message(100, text, entities=command(text))
            await eventually(lambda: answered(h, telegram, 100, 2), within_s=30)
    finally:
        await other.stop()
    comparison, chart = telegram.bot_messages(100)
    assert comparison.text.startswith("Comparing main and other on: “Where is the spare key?”")
    assert chart.photo is not None and chart.photo.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", chart.photo[16:24])
    assert (width, height) == (800, 450) and 5_000 < len(chart.photo) < 300_000
    assert "main" in chart.text and "other" in chart.text, f"the caption names neither model: {chart.text!r}"
    [upload] = telegram.calls_of("sendPhoto")
    assert upload.params["chat_id"] == "100" and upload.params["photo"] == chart.photo


async def test_a_chart_whose_upload_failed_is_sent_once_after_the_text_without_repeating_it(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    async with delivering(tmp_path, telegram) as adapter:
        png = plain_png(640, 360)
        reply = OutgoingReply(reply_id="r1", channel="telegram", chat_id="100", text="Two answers, compared.",
                              extra={"chat_id": 100, "message_id": 7},
                              images=[Image.png("compare.png", "Power of main and other", png)])  # fmt: skip
        telegram.fail("sendPhoto", 500, "Internal Server Error")
        with pytest.raises(NetworkError):
            await adapter.deliver(reply)
        assert [m.photo for m in telegram.bot_messages(100)] == [None], "only the text went out"
        receipt = await adapter.deliver(reply)
        assert await adapter.deliver(reply) == receipt == "100:1"
        text, photo = telegram.bot_messages(100)
        assert text.text == "Two answers, compared." and photo.photo == png and photo.text == "Power of main and other"
        assert len(telegram.calls_of("sendMessage")) == 1 and len(telegram.calls_of("sendPhoto")) == 2
        await adapter.bot.shutdown()


def voice(fake: FakeTelegram, speech: str) -> dict[str, Any]:
    """A voice message as the Bot API describes it; its file holds the "speech" the test model server hears."""
    content = b"SPEECH:" + speech.encode()
    file_id = fake.add_file("voice.ogg", content)
    return {"file_id": file_id, "file_unique_id": f"u{file_id}", "duration": 2, "mime_type": "audio/ogg",
            "file_size": len(content)}  # fmt: skip


async def test_a_voice_message_is_heard_and_answered_quoting_what_was_understood(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    await history.add("alice", [SPARE_KEY])
    async with hearing_bridge(tmp_path, history, fake_llm, telegram) as h:
        telegram.push_message(100, voice=voice(telegram, "Where is the spare key?"))
        telegram.push_message(999, voice=voice(telegram, "A stranger speaks"))  # never fetched, never heard
        telegram.push_message(100, chat_id=GROUP, chat_type="supergroup", voice=voice(telegram, "In a group"))
        telegram.push_message(100, voice=voice(telegram, ""))  # nothing understood
        await eventually(lambda: answered(h, telegram, 100, 2), within_s=30)
    heard, nothing = telegram.bot_messages(100)
    assert heard.text.startswith(
        f"🎤 “Where is the spare key?”\n\nYou asked: Where is the spare key? {SPARE_KEY.text} [1]"
    )
    assert "whatsapp:family.zip" in heard.text, "the answer does not cite the note"
    assert nothing.text == NOTHING_HEARD
    assert [t["size"] for t in fake_llm.transcriptions] == [len(b"SPEECH:Where is the spare key?"), len(b"SPEECH:")]
    assert len(telegram.calls_of("getFile")) == 2, "a stranger's or a group's voice message was fetched"
    assert list((tmp_path / "attachments").rglob("*.ogg")) == [], "a recording was kept after it was heard"
    assert telegram.bot_messages(999) == [] and telegram.bot_messages(GROUP) == []
    [asked] = [r async for r in history.store.export("alice") if r.id.startswith("q:")]
    assert asked.text == "Where is the spare key?" and asked.transcribed is True
    assert asked.audio.endswith(".ogg")


async def test_an_export_sent_in_the_chat_has_its_voice_notes_transcribed(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        line = "12/31/23, 9:05\u202fPM - Ben: PTT-20231231-WA0004.opus (file attached)\r\n"
        zipped.writestr("WhatsApp Chat with Ben.txt", line)
        zipped.writestr("PTT-20231231-WA0004.opus", ogg_opus(4, b"SPEECH:The boat key is in the red toolbox"))
    content = archive.getvalue()
    file_id = telegram.add_file("WhatsApp Chat with Ben.zip", content)
    document = {"file_id": file_id, "file_unique_id": "u1", "file_name": "WhatsApp Chat with Ben.zip",
                "mime_type": "application/zip", "file_size": len(content)}  # fmt: skip
    async with hearing_bridge(tmp_path, history, fake_llm, telegram) as h:
        telegram.push_message(100, document=document)
        await eventually(lambda: answered(h, telegram, 100), within_s=30)
    [reply] = telegram.bot_messages(100)
    assert reply.text.startswith("Imported 1"), reply.text
    texts = [r.text async for r in history.export("alice")]
    assert texts == ["sent a voice message (PTT-20231231-WA0004.opus), transcribed: The boat key is in the red toolbox"]


async def test_a_photo_sent_without_words_is_kept_as_a_record_that_it_was_sent(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    photo = [{"file_id": "p1", "file_unique_id": "p1u", "width": 800, "height": 600, "file_size": 4000}]
    async with bridge(tmp_path, history, fake_llm, telegram) as h:
        sent = telegram.push_message(100, photo=photo)
        await eventually(lambda: answered(h, telegram, 100), within_s=20)
    name = f"photo-{sent['message']['message_id']}.jpg"
    [reply] = telegram.bot_messages(100)
    assert reply.text.startswith(f"{name}: noted in your history that you sent this photo."), reply.text
    [record] = [r async for r in history.export("alice")]
    assert (record.text, record.author, record.extra["media"]) == (f"sent a photo ({name})", "me", "image/jpeg")
    assert telegram.calls_of("getFile") == [], "a photo is not looked into, so it is not fetched"


async def test_a_voice_message_over_the_bound_is_not_fetched_and_the_reply_says_why(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, telegram: FakeTelegram
) -> None:
    async with hearing_bridge(tmp_path, history, fake_llm, telegram, max_audio_bytes=20) as h:
        telegram.push_message(100, voice=voice(telegram, "a voice message longer than twenty bytes"))
        await eventually(lambda: answered(h, telegram, 100), within_s=20)
    [reply] = telegram.bot_messages(100)
    assert reply.text == NOT_HEARD.format(reason="it is 47 bytes; I take voice messages of up to 20 bytes")
    assert telegram.calls_of("getFile") == [] and fake_llm.transcriptions == []
