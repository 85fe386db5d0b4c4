"""Routing is a pure function: every rule is a row of this table."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bridge.commands.command_table import COMMANDS, menu
from bridge.commands.handlers import HELP
from bridge.dispatch.router import MAX_TEXT_CHARS, Command, Ignore, Question, Remember, RouteContext, route
from bridge.language.catalog import REPLY_LANGUAGES, SOURCE_LANGUAGE, speaking
from bridge.messages import Attachment, IncomingMessage

ALICE = RouteContext(person="alice", bot_names=("@confide_bot", "Confide"))
PENDING = RouteContext(person="alice", pending_action=True, bot_names=("@confide_bot",))
STRANGER = RouteContext(person=None, bot_names=("@confide_bot",))
SHARED = RouteContext(person="alice", bot_names=("@confide_bot",), shared=frozenset({"carol", "bob"}))
ROOM = "room:telegram:1"  # the group chat 1 of msg(): its own conversation's scope
LONG = "x" * (MAX_TEXT_CHARS + 1)


def msg(text: str, **fields: Any) -> IncomingMessage:
    return IncomingMessage(channel="telegram", chat_id="1", sender="100", platform_message_id="9", text=text, **fields)


CASES = [
    # (description, message, context, expected)
    ("plain question", msg("Where is the cabin key?"), ALICE, Question("Where is the cabin key?", "alice")),
    ("question is trimmed", msg("  hi there \n"), ALICE, Question("hi there", "alice")),
    ("unknown sender gets nothing", msg("hello"), STRANGER, Ignore("unknown sender")),
    ("unknown sender's command too", msg("/help"), STRANGER, Ignore("unknown sender")),
    ("own echo", msg("an answer", from_bot_itself=True), ALICE, Ignore("own message")),
    ("own echo before identity", msg("x", from_bot_itself=True), STRANGER, Ignore("own message")),
    ("group without mention is the room's", msg("lunch?", is_direct=False), ALICE, Remember(ROOM, "lunch?")),
    ("a stranger's group message is the room's", msg("lunch?", is_direct=False), STRANGER, Remember(ROOM, "lunch?")),
    ("a stranger's question in a group is not answered", msg("@confide_bot code?", is_direct=False,
     mentions_bot=True), STRANGER, Remember(ROOM, "code?")),
    ("a stranger's group command is ignored", msg("/help@confide_bot", is_direct=False, mentions_bot=True),
     STRANGER, Ignore("unknown sender")),
    ("group command without mention", msg("/help", is_direct=False), ALICE,
     Ignore("group message not addressed to the bot")),
    ("empty group message", msg(" ", is_direct=False), ALICE, Ignore("group message not addressed to the bot")),
    ("a long group message is kept up to the bound", msg(LONG, is_direct=False), ALICE,
     Remember(ROOM, LONG[:MAX_TEXT_CHARS])),
    ("group with mention is answered from the room", msg("@confide_bot when is lunch?", is_direct=False,
     mentions_bot=True), ALICE, Question("when is lunch?", "alice", ROOM)),
    ("group mention by name with colon", msg("Confide: when?", is_direct=False, mentions_bot=True), ALICE,
     Question("when?", "alice", ROOM)),
    ("group reply to the bot", msg("and Tuesday?", is_direct=False, replies_to_bot=True), ALICE,
     Question("and Tuesday?", "alice", ROOM)),
    ("group question with shares", msg("@confide_bot when?", is_direct=False, mentions_bot=True), SHARED,
     Question("when?", "alice", ROOM, ("bob", "carol"))),
    ("group command carries the room", msg("/sources@confide_bot", is_direct=False, mentions_bot=True), ALICE,
     Command("sources", (), "alice", ROOM)),
    ("share in a group", msg("/share@confide_bot", is_direct=False, mentions_bot=True), SHARED,
     Command("share", (), "alice", ROOM, ("bob", "carol"))),
    ("share in a direct chat", msg("/share"), ALICE, Command("share", (), "alice")),
    ("unshare", msg("/unshare"), ALICE, Command("unshare", (), "alice")),
    ("only a mention in a group", msg("@confide_bot", is_direct=False, mentions_bot=True), ALICE,
     Command("empty", (), "alice", ROOM)),
    ("a group confirmation is the person's own", msg("yes", is_direct=False, replies_to_bot=True), PENDING,
     Command("confirm", (), "alice", ROOM)),
    ("help", msg("/help"), ALICE, Command("help", (), "alice")),
    ("start is help", msg("/start"), ALICE, Command("help", (), "alice")),
    ("an alias in capitals", msg("/START@confide_bot"), ALICE, Command("help", (), "alice")),
    ("internal commands cannot be typed", msg("/confirm"), PENDING, Command("unknown", ("confirm",), "alice")),
    ("command is case-insensitive", msg("/RESET"), ALICE, Command("reset", (), "alice")),
    ("command with args", msg("/forget since 2024-01-01"), ALICE, Command("forget", ("since", "2024-01-01"), "alice")),
    ("model with name", msg("/model qwen"), ALICE, Command("model", ("qwen",), "alice")),
    ("telegram-style addressed command", msg("/sources@confide_bot"), ALICE, Command("sources", (), "alice")),
    ("command for another bot", msg("/help@other_bot"), ALICE, Ignore("command for another bot")),
    ("unknown command", msg("/frobnicate now"), ALICE, Command("unknown", ("frobnicate",), "alice")),
    ("a lone slash is a question", msg("/"), ALICE, Question("/", "alice")),
    ("yes confirms a pending action", msg("Yes"), PENDING, Command("confirm", (), "alice")),
    ("yes. with punctuation", msg("yes."), PENDING, Command("confirm", (), "alice")),
    ("no cancels a pending action", msg("no"), PENDING, Command("cancel", (), "alice")),
    ("yes without pending action is a question", msg("yes"), ALICE, Question("yes", "alice")),
    ("other text with pending action is a question", msg("what about May?"), PENDING,
     Question("what about May?", "alice")),
    ("empty message", msg("   "), ALICE, Command("empty", (), "alice")),
    ("only a mention", msg("@confide_bot: "), ALICE, Command("empty", (), "alice")),
    ("a 100 kB question is refused", msg("q" * 100_000), ALICE, Command("too_long", ("100000",), "alice")),
    ("the bound itself is a question", msg("q" * MAX_TEXT_CHARS), ALICE, Question("q" * MAX_TEXT_CHARS, "alice")),
    ("document in a direct chat is imported", msg("", attachments=[Attachment(name="a.pdf")]), ALICE,
     Command("import", (), "alice")),
    ("/import caption with a document", msg("/import", attachments=[Attachment(name="a.zip")]), ALICE,
     Command("import", (), "alice")),
    ("document with a question is a question", msg("what is this?", attachments=[Attachment(name="a.pdf")]),
     ALICE, Question("what is this?", "alice")),
    ("a person's document in a group is the room's", msg("", is_direct=False,
     attachments=[Attachment(name="a.pdf")]), SHARED, Command("import", (), "alice", ROOM, ("bob", "carol"))),
    ("a stranger's document in a group is not imported", msg("", is_direct=False, mentions_bot=True,
     attachments=[Attachment(name="a.pdf")]), STRANGER, Ignore("unknown sender")),
    ("a photo in a group is not imported", msg("", is_direct=False,
     attachments=[Attachment(name="p.jpg", mime_type="image/jpeg")]), ALICE,
     Ignore("group message not addressed to the bot")),
    ("a photo's caption in a group is the room's", msg("at the lake", is_direct=False,
     attachments=[Attachment(name="p.jpg", mime_type="image/jpeg")]), ALICE, Remember(ROOM, "at the lake")),
    ("/import without a document", msg("/import"), ALICE, Command("import", (), "alice")),
    ("compare with a question", msg("/compare qwen mistral where is the key?"), ALICE,
     Command("compare", ("qwen", "mistral", "where", "is", "the", "key?"), "alice")),
    ("compare without a question", msg("/Compare qwen mistral"), ALICE,
     Command("compare", ("qwen", "mistral"), "alice")),
    ("usage", msg("/usage 30"), ALICE, Command("usage", ("30",), "alice")),
    # A sender only vouched for (mail by another server's Authentication-Results) may ask, not change a history.
    ("unproven sender's question", msg("where?", sender_proven=False), ALICE, Question("where?", "alice")),
    ("unproven sender's /forget", msg("/forget all", sender_proven=False), ALICE,
     Command("unproven", ("forget",), "alice")),
    ("unproven sender's yes", msg("yes", sender_proven=False), PENDING, Command("unproven", ("confirm",), "alice")),
    ("unproven sender's no cancels", msg("no", sender_proven=False), PENDING, Command("cancel", (), "alice")),
    ("unproven sender's document", msg("", sender_proven=False, attachments=[Attachment(name="a.pdf")]), ALICE,
     Command("unproven", ("import",), "alice")),
    ("unproven sender's /import", msg("/import", sender_proven=False), ALICE,
     Command("unproven", ("import",), "alice")),
]  # fmt: skip


@pytest.mark.parametrize(("message", "context", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_route(message: IncomingMessage, context: RouteContext, expected: object) -> None:
    assert route(message, context) == expected


def test_every_command_of_the_table_is_routed_by_its_names() -> None:
    for spec in COMMANDS:
        for name in () if spec.internal else (spec.name, *spec.aliases):
            assert route(msg(f"/{name} x"), ALICE) == Command(spec.name, ("x",), "alice")


def test_help_and_the_command_menu_come_from_the_table() -> None:
    listed = [spec for spec in COMMANDS if spec.listed and not spec.internal]
    assert [name for name, _ in menu()] == [spec.name for spec in listed]
    assert {"help", "compare", "usage"} <= {name for name, _ in menu()}
    english = menu()
    for language in REPLY_LANGUAGES:  # Telegram's setMyCommands limits, for the menu in every language
        with speaking(language):
            translated = menu()
        assert [name for name, _ in translated] == [name for name, _ in english]
        for name, description in translated:
            assert re.fullmatch(r"[a-z0-9_]{1,32}", name) and 1 <= len(description) <= 256, (language, name)
        if language != SOURCE_LANGUAGE:
            assert translated != english, f"{language}: the menu's descriptions are not translated"
    assert all(f"/{spec.name}" in HELP for spec in listed)
    assert "/confirm" not in HELP and "/import" not in HELP and "/empty" not in HELP and "/too_long" not in HELP
    assert "Send me a chat export (WhatsApp .txt/.zip, Telegram result.json, mbox) or a document" in HELP
