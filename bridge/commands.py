"""Chat commands: /help, /reset, /sources, /forget (with confirmation), /model, /usage.

/compare streams two models, so the worker runs it (bridge/compare.py), not this module.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge import chats
from bridge.chats import ChatState
from bridge.history import HistoryIndex
from bridge.ingest import SourceFinder, ingest
from bridge.messages import Attachment, Citation, IncomingMessage
from bridge.router import Command
from bridge.store import Selector
from bridge.usage import UsageLog, format_summary

log = logging.getLogger(__name__)

HELP = """I answer questions from your own history: chats, mails and documents you imported.
Just write your question. Commands:
/help – this text
/reset – forget this conversation's memory (your history stays)
/sources – what my last answer was based on
/forget all | source NAME | since DATE | until DATE | between DATE DATE | last 2h/3d
        – delete from your history (asks for confirmation)
/model [NAME] – show or choose the model for this chat
/compare A B [question] – models A and B answer the same question side by side, with time and energy
        (without a question: your last question here)
/usage [DAYS] – your answers, tokens and energy per model and day (default: 7 days)
Send me a chat export (WhatsApp .txt/.zip, Telegram result.json, mbox) or a document (.txt, .md, .pdf, .docx,
.html) and I add it to your history."""

FORGET_USAGE = "Usage: /forget all | source NAME | since YYYY-MM-DD | until YYYY-MM-DD | between D1 D2 | last 2h"

Effect = Callable[[sqlite3.Connection], None]


@dataclass
class CommandResult:
    text: str
    citations: list[Citation] = field(default_factory=list)
    effect: Effect | None = None


class Commands:
    def __init__(
        self,
        history: HistoryIndex,
        model_names: list[str],
        default_model: str,
        find_source: SourceFinder | None = None,
        usage: UsageLog | None = None,
    ) -> None:
        self.history = history
        self.model_names = model_names
        self.default_model = default_model
        self.find_source = find_source
        self.usage = usage

    async def run(self, command: Command, message: IncomingMessage, state: ChatState) -> CommandResult:
        handler = getattr(self, f"_{command.name}", None)
        if handler is None:
            return CommandResult(f"Unknown command /{command.args[0] if command.args else ''}. Try /help.")
        return await handler(command, message, state)

    async def _help(self, command: Command, message: IncomingMessage, state: ChatState) -> CommandResult:
        return CommandResult(HELP)

    async def _unknown(self, command: Command, message: IncomingMessage, state: ChatState) -> CommandResult:
        return CommandResult(f"Unknown command /{command.args[0]}. Try /help.")

    async def _reset(self, command: Command, message: IncomingMessage, state: ChatState) -> CommandResult:
        key = message.chat_key
        return CommandResult(
            "Done: this conversation starts afresh. Your history is untouched.",
            effect=lambda conn: chats.reset(conn, key),
        )

    async def _sources(self, command: Command, message: IncomingMessage, state: ChatState) -> CommandResult:
        if not state.last_sources:
            return CommandResult("My last answer in this chat used no sources (or there was none yet).")
        lines = ["My last answer was based on:"]
        for c in state.last_sources:
            lines.append(f"{c.label()}\n    “{c.excerpt}”")
        return CommandResult("\n".join(lines))

    async def _model(self, command: Command, message: IncomingMessage, state: ChatState) -> CommandResult:
        current = state.model if state.model in self.model_names else self.default_model
        if not command.args:
            return CommandResult(f"Model for this chat: {current}. Available: {', '.join(self.model_names)}.")
        wanted = command.args[0]
        if wanted not in self.model_names:
            return CommandResult(f"There is no model {wanted!r}. Available: {', '.join(self.model_names)}.")
        key = message.chat_key
        return CommandResult(f"This chat now uses {wanted}.", effect=lambda conn: chats.set_model(conn, key, wanted))

    async def _usage(self, command: Command, message: IncomingMessage, state: ChatState) -> CommandResult:
        if self.usage is None:
            return CommandResult("Usage is not recorded here.")
        try:
            days = int(command.args[0]) if command.args else 7
        except ValueError:
            days = 0
        if not 1 <= days <= 366:
            return CommandResult("Usage: /usage [DAYS], with DAYS from 1 to 366 (default 7).")
        return CommandResult(format_summary(await self.usage.summary(command.person, days), days))

    async def _forget(self, command: Command, message: IncomingMessage, state: ChatState) -> CommandResult:
        try:
            selector = parse_forget(command.args, datetime.now(UTC))
        except ValueError as exc:
            return CommandResult(f"{exc}\n{FORGET_USAGE}")
        count = await self.history.count(command.person, selector)
        if count == 0:
            return CommandResult(f"Nothing in your history matches {selector.describe()}.")
        action = {"action": "forget", "person": command.person, "selector": _selector_to_json(selector)}
        key = message.chat_key
        return CommandResult(
            f"This will permanently delete {count} piece(s) of your history ({selector.describe()}). "
            "Reply “yes” within 5 minutes to confirm, or “no” to cancel.",
            effect=lambda conn: chats.set_pending(conn, key, action),
        )

    async def _confirm(self, command: Command, message: IncomingMessage, state: ChatState) -> CommandResult:
        pending = state.pending_for(command.person)
        key = message.chat_key
        clear: Effect = lambda conn: chats.set_pending(conn, key, None)  # noqa: E731
        if pending is None or pending.get("action") != "forget":
            return CommandResult("There is nothing waiting for confirmation.", effect=clear)
        selector = _selector_from_json(pending["selector"])
        deleted = await self.history.forget(command.person, selector)
        log.info("person %s deleted %d history records (%s)", command.person, deleted, selector.describe())

        def effect(conn: sqlite3.Connection) -> None:
            clear(conn)
            if selector.everything:
                chats.reset(conn, key)

        return CommandResult(f"Deleted {deleted} piece(s) of your history ({selector.describe()}).", effect=effect)

    async def _import(self, command: Command, message: IncomingMessage, state: ChatState) -> CommandResult:
        if not message.attachments:
            return CommandResult("Send the file itself (a chat export or a document) and I will import it.")
        lines = [await self._import_one(command.person, attachment) for attachment in message.attachments]
        return CommandResult("\n".join(lines))

    async def _import_one(self, person: str, attachment: Attachment) -> str:
        if attachment.is_media:
            kind = "voice messages" if attachment.mime_type.startswith("audio/") else "photos and videos"
            return f"{attachment.name}: I can't read {kind} yet (not handled yet). Please send text or a document."
        if not attachment.path or self.find_source is None:
            return f"{attachment.name}: I could not get the file itself, so nothing was imported."
        source = self.find_source(Path(attachment.path), person)
        if source is None:
            return (
                f"{attachment.name}: I don't know this kind of file. I read WhatsApp and Telegram exports, "
                "mbox files and .txt, .md, .pdf, .docx and .html documents."
            )
        try:
            source.check()
            summary = await ingest(self.history, person, source.items())
        except ValueError as exc:  # WrongKind and parse errors: tell the person, nothing is damaged
            log.warning("import of %s for %s failed: %s", attachment.name, person, exc)
            return f"{attachment.name}: could not import it ({exc}). Nothing was changed."
        log.info("person %s imported %s (%s): %s", person, attachment.name, source.kind, summary.describe())
        problems = f" First problem: {summary.errors[0]}" if summary.errors else ""
        return f"{summary.describe()} ({attachment.name}, {source.kind}){problems}"

    async def _cancel(self, command: Command, message: IncomingMessage, state: ChatState) -> CommandResult:
        key = message.chat_key
        return CommandResult("Cancelled; nothing was deleted.", effect=lambda conn: chats.set_pending(conn, key, None))


def parse_forget(args: tuple[str, ...], now: datetime) -> Selector:
    if not args:
        raise ValueError("What should I forget?")
    kind, rest = args[0].lower(), args[1:]
    if kind == "all" and not rest:
        return Selector(everything=True)
    if kind == "source" and rest:
        return Selector(source=" ".join(rest))
    if kind == "since" and len(rest) == 1:
        return Selector(since=parse_date(rest[0]))
    if kind == "until" and len(rest) == 1:
        return Selector(until=parse_date(rest[0]))
    if kind == "between" and len(rest) == 2:
        since, until = parse_date(rest[0]), parse_date(rest[1])
        if until <= since:
            raise ValueError("The second date must come after the first.")
        return Selector(since=since, until=until)
    if kind == "last" and len(rest) == 1:
        return Selector(since=now - parse_span(rest[0]))
    raise ValueError(f"I did not understand “/forget {' '.join(args)}”.")


def parse_date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"“{text}” is not a date like 2024-05-31 or 2024-05-31T14:00.") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_span(text: str) -> timedelta:
    match = re.fullmatch(r"(\d{1,5})\s*([mhdw])", text.lower())
    if not match:
        raise ValueError(f"“{text}” is not a span like 30m, 2h, 3d or 1w.")
    amount, unit = int(match[1]), match[2]
    return timedelta(**{{"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: amount})


def _selector_to_json(selector: Selector) -> dict[str, Any]:
    return {
        "source": selector.source,
        "since": selector.since.isoformat() if selector.since else None,
        "until": selector.until.isoformat() if selector.until else None,
        "everything": selector.everything,
    }


def _selector_from_json(data: dict[str, Any]) -> Selector:
    return Selector(
        source=data.get("source"),
        since=datetime.fromisoformat(data["since"]) if data.get("since") else None,
        until=datetime.fromisoformat(data["until"]) if data.get("until") else None,
        everything=bool(data.get("everything")),
    )
