"""Routing: a pure function from a message and what we know about its chat to what to do with it.

No I/O here, so every rule is tested by a table (tests/test_router.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.command_table import typed
from bridge.messages import IncomingMessage

YES = frozenset({"yes", "y", "confirm", "ja", "oui", "si", "sí"})
NO = frozenset({"no", "n", "cancel", "nein", "non", "stop"})


@dataclass(frozen=True)
class RouteContext:
    person: str | None
    pending_action: bool = False
    bot_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]
    person: str


@dataclass(frozen=True)
class Question:
    text: str
    person: str


@dataclass(frozen=True)
class Ignore:
    reason: str


Route = Command | Question | Ignore


def route(message: IncomingMessage, context: RouteContext) -> Route:
    if message.from_bot_itself:
        return Ignore("own message")
    if context.person is None:
        return Ignore("unknown sender")
    if not message.is_direct and not (message.mentions_bot or message.replies_to_bot):
        return Ignore("group message not addressed to the bot")
    text = strip_mentions(message.text, context.bot_names).strip()
    if message.attachments and message.is_direct and (not text or text.lower().startswith("/import")):
        return Command("import", tuple(text.split()[1:]), context.person)
    if text.startswith("/") and len(text) > 1:
        return _command(text, context)
    if context.pending_action and text.lower().rstrip(".!") in YES:
        return Command("confirm", (), context.person)
    if context.pending_action and text.lower().rstrip(".!") in NO:
        return Command("cancel", (), context.person)
    if not text:
        return Ignore("attachment without text" if message.attachments else "empty message")
    return Question(text, context.person)


def _command(text: str, context: RouteContext) -> Route:
    assert context.person is not None
    head, *args = text[1:].split()
    # Telegram appends the bot's name in groups: /help@ConfideBot
    name, _, addressee = head.partition("@")
    if addressee and context.bot_names and addressee.lower() not in {b.lower().lstrip("@") for b in context.bot_names}:
        return Ignore("command for another bot")
    spec = typed(name)  # by name or alias (/start is /help); the internal ones cannot be typed
    if spec is None:
        return Command("unknown", (name.lower(),), context.person)
    return Command(spec.name, tuple(args), context.person)


def strip_mentions(text: str, bot_names: tuple[str, ...]) -> str:
    for name in bot_names:
        text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)[:,]?", "", text, flags=re.IGNORECASE)
    return text
