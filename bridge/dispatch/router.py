"""Routing: a pure function from a message and what we know about its chat to what to do with it.

No I/O here, so every rule is tested by a table (tests/test_router.py), and the one privacy rule of groups
is a property of this function (tests/test_groups.py): what a message may be answered from, its scopes, is
decided here and nowhere else. A direct chat's scope is the person's own history; a group's is the room's
own conversation (`room:<chat key>`) plus the histories of the persons who `/share`d theirs into that room.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.commands import command_table
from bridge.commands.command_table import typed
from bridge.messages import IncomingMessage

YES = frozenset({"yes", "y", "confirm", "ja", "oui", "si", "sí", "sì"})  # as the confirmation asks in each language
NO = frozenset({"no", "n", "cancel", "nein", "non", "stop", "nee", "annulla", "abbrechen", "annuler", "cancelar"})
# The longest message read as a question or command; a longer one is refused with a reply (a pasted document
# belongs in a file), and a longer group message is indexed only up to here.
MAX_TEXT_CHARS = 4_000
ROOM_PREFIX = "room:"  # a person's id cannot contain ':' (config), so no room scope is ever a person's


@dataclass(frozen=True)
class RouteContext:
    person: str | None
    pending_action: bool = False
    bot_names: tuple[str, ...] = ()
    shared: frozenset[str] = frozenset()  # persons who /share'd their history into this group


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]
    person: str
    room: str | None = None  # set in a group: that room's scope
    shared: tuple[str, ...] = ()  # in a group: the persons whose history the room may use

    @property
    def scopes(self) -> tuple[str, ...]:
        """The histories this command may read or write: see `scopes_of`."""
        return scopes_of(self.person, self.room, self.shared)


@dataclass(frozen=True)
class Question:
    text: str
    person: str
    room: str | None = None
    shared: tuple[str, ...] = ()

    @property
    def scopes(self) -> tuple[str, ...]:
        """The histories the answer may be drawn from: see `scopes_of`."""
        return scopes_of(self.person, self.room, self.shared)


@dataclass(frozen=True)
class Remember:
    """A group message not for the bot: part of the room's own conversation, which every member has seen."""

    room: str
    text: str


@dataclass(frozen=True)
class Ignore:
    reason: str


Route = Command | Question | Remember | Ignore


def scopes_of(person: str, room: str | None, shared: tuple[str, ...]) -> tuple[str, ...]:
    """Direct chat: the person's own history. Group: the room first, then only what was shared into it."""
    return (person,) if room is None else (room, *shared)


def room_scope(message: IncomingMessage) -> str:
    """The index scope of a group's own conversation."""
    return scope_of_room(message.chat_key)


def scope_of_room(chat_key: str) -> str:
    """The index scope of the group chat `chat_key` ("channel:chat id"), live or backfilled."""
    return f"{ROOM_PREFIX}{chat_key}"


def route(message: IncomingMessage, context: RouteContext) -> Route:
    decided = _route(message, context)
    if isinstance(decided, Command) and not message.sender_proven and command_table.spec(decided.name).changes_history:
        # Only a sender the platform proves may delete from or add to a history (forged mail must not).
        return Command("unproven", (decided.name,), decided.person, decided.room, decided.shared)
    return decided


def _route(message: IncomingMessage, context: RouteContext) -> Route:
    if message.from_bot_itself:
        return Ignore("own message")
    if message.is_direct:
        return _direct(message, context)
    return _group(message, context)


def _direct(message: IncomingMessage, context: RouteContext) -> Route:
    if context.person is None:
        return Ignore("unknown sender")
    text = strip_mentions(message.text, context.bot_names).strip()
    if message.attachments and (not text or text.lower().startswith("/import")):
        return Command("import", tuple(text.split()[1:]), context.person)
    return _addressed(text, context.person, context, None, ())


def _group(message: IncomingMessage, context: RouteContext) -> Route:
    """Every member's text is the room's; only a person's addressed message is answered, from the room."""
    room = room_scope(message)
    addressed = message.mentions_bot or message.replies_to_bot
    text = (strip_mentions(message.text, context.bot_names) if addressed else message.text).strip()
    person = context.person
    shared = tuple(sorted(context.shared))
    if person is not None and any(not a.is_media for a in message.attachments):
        return Command("import", (), person, room, shared)  # a document sent into the room is the room's
    if person is None or not addressed:
        if text and not text.startswith("/"):
            return Remember(room, text[:MAX_TEXT_CHARS])
        if person is None and addressed:
            return Ignore("unknown sender")
        return Ignore("group message not addressed to the bot")
    return _addressed(text, person, context, room, shared)


def _addressed(text: str, person: str, context: RouteContext, room: str | None, shared: tuple[str, ...]) -> Route:
    """A message for the bot from a known person: a command, a confirmation, or a question."""
    if len(text) > MAX_TEXT_CHARS:
        return Command("too_long", (str(len(text)),), person, room, shared)
    if text.startswith("/") and len(text) > 1:
        return _command(text, person, context, room, shared)
    answer = text.lower().rstrip(".!")
    if context.pending_action and answer in YES:
        return Command("confirm", (), person, room, shared)
    if context.pending_action and answer in NO:
        return Command("cancel", (), person, room, shared)
    if not text:
        return Command("empty", (), person, room, shared)
    return Question(text, person, room, shared)


def _command(text: str, person: str, context: RouteContext, room: str | None, shared: tuple[str, ...]) -> Route:
    head, *args = text[1:].split()
    # Telegram appends the bot's name in groups: /help@ConfideBot
    name, _, addressee = head.partition("@")
    if addressee and context.bot_names and addressee.lower() not in {b.lower().lstrip("@") for b in context.bot_names}:
        return Ignore("command for another bot")
    spec = typed(name)  # by name or alias (/start is /help); the internal ones cannot be typed
    if spec is None:
        return Command("unknown", (name.lower(),), person, room, shared)
    return Command(spec.name, tuple(args), person, room, shared)


def strip_mentions(text: str, bot_names: tuple[str, ...]) -> str:
    for name in bot_names:
        text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)[:,]?", "", text, flags=re.IGNORECASE)
    return text
