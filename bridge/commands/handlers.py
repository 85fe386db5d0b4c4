"""Chat commands: one handler for each entry of bridge/commands/command_table.py, /compare's streaming one included."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TypeVar

from bridge.answering.answer import Answer, AnswerPipeline, Progress, usage_of
from bridge.commands import charts, command_table
from bridge.commands.compare import (
    CompareError,
    format_comparison,
    merged_citations,
    parse_compare,
    question_and_context,
)
from bridge.config import ImportSettings
from bridge.dispatch.router import MAX_TEXT_CHARS, Command
from bridge.history.importers.registry import SourceFinder
from bridge.history.imports import ImportJob, import_into
from bridge.history.index import HistoryIndex
from bridge.history.store import CONFIDE_SOURCE_PREFIX, Selector
from bridge.intake import media
from bridge.intake.adapter import Members
from bridge.intake.hearing import Hearing
from bridge.language.catalog import N_, say
from bridge.messages import Attachment, Citation, HistoryRecord, Image, IncomingMessage
from bridge.state import chats
from bridge.state.chats import ChatState, Turn
from bridge.state.store import Connection
from bridge.state.usage import UsageLog, format_summary

T = TypeVar("T")
PHOTOS_UNREAD = N_("I can't look into photos or videos; a caption with it, or a message, is what finds it later.")
NO_TRANSCRIBER = N_("I can't listen to voice messages here (no transcriber is set up). Please write your question.")

log = logging.getLogger(__name__)

HELP = command_table.help_text()
EXAMPLE = N_("Ask me something about your history, e.g. “Where is the spare key of the cabin?” or /help.")
ONLY_IN_GROUP = N_("/{name} works only in a group: it decides whether my answers there may use your own history.")
# What a person's own history holds (counts, usage) is nobody else's business: never told where a group reads it.
ONLY_IN_DIRECT = N_(
    "/{name} works only in a direct chat with me: it is about your own history, which this group does not see."
)
FORGET_USAGE = N_("Usage: /forget all | source NAME | since YYYY-MM-DD | until YYYY-MM-DD | between D1 D2 | last 2h")

Effect = Callable[[Connection], None]


@dataclass
class CommandResult:
    """What a command (or an answer) leaves: the reply, what to remember in the reply's own transaction, and
    the model answers in it, whose usage is recorded and counted."""

    text: str
    citations: list[Citation] = field(default_factory=list)
    effect: Effect | None = None
    answers: list[Answer] = field(default_factory=list)
    outcome: str | None = None  # how the message ends in the inbox and the metrics; None: "command: NAME"
    model: str | None = None  # the model that wrote the reply, if one did
    images: list[Image] = field(default_factory=list)  # charts, sent after the text


async def _picture(name: str, draw: Callable[[T], charts.Chart], data: T) -> list[Image]:
    """A chart drawn off the event loop (matplotlib takes a second the first time); the reply's text says it
    all in words, so a chart that cannot be drawn leaves the reply without it rather than failing it."""
    try:
        chart = await asyncio.to_thread(draw, data)
    except Exception:
        log.exception("drawing %s failed; the reply goes without it", name)
        return []
    return [Image.png(name, chart.alt, chart.png)]


async def _nobody() -> Members | None:
    """Members of a chat whose adapter cannot list them."""
    return None


@dataclass(frozen=True)
class CommandCall:
    """One command to run, with what its handler may need of the chat and the person."""

    command: Command
    message: IncomingMessage
    state: ChatState
    person_name: str
    recent_turns: int  # how many earlier turns an answer replays
    load_turns: Callable[[int], Awaitable[list[Turn]]]  # the chat's last n turns
    progress: Progress  # shows the reply as it grows (a streaming command's; a no-op for the others)
    members: Callable[[], Awaitable[Members | None]] = _nobody  # who is in a group
    zone: tzinfo = UTC  # the person's time zone (PersonSettings.time_zone)

    @property
    def state_key(self) -> str:
        """Where this chat's memory for this person is kept (per person in a group: bridge.state.chats.state_key)."""
        return self.state.chat_key


Handler = Callable[["Commands", CommandCall], Awaitable[CommandResult]]
_HANDLERS: dict[str, Handler] = {}


def _handles(name: str) -> Callable[[Handler], Handler]:
    """Bind a method to the table's entry `name` (KeyError at import for a name the table lacks)."""
    command_table.spec(name)

    def register(handler: Handler) -> Handler:
        _HANDLERS[name] = handler
        return handler

    return register


class Commands:
    def __init__(
        self,
        history: HistoryIndex,
        pipeline: AnswerPipeline,
        default_model: str,
        find_source: SourceFinder | None = None,
        usage: UsageLog | None = None,
        hearing: Hearing | None = None,
        imports: ImportSettings | None = None,
    ) -> None:
        self.history = history
        self.pipeline = pipeline
        self.default_model = default_model
        self.find_source = find_source
        self.usage = usage
        self.hearing = hearing  # exports sent in a chat have their voice notes transcribed, as `confide import` does
        self.imports = imports  # the bounds files sent in a chat are read with (Settings.imports)

    @property
    def model_names(self) -> list[str]:
        return self.pipeline.models.names()

    async def run(self, call: CommandCall) -> CommandResult:
        return await _HANDLERS[call.command.name](self, call)

    @_handles("help")
    async def _help(self, call: CommandCall) -> CommandResult:
        return CommandResult(command_table.help_text())

    @_handles("unknown")
    async def _unknown(self, call: CommandCall) -> CommandResult:
        return CommandResult(say("Unknown command /{name}. Try /help.", name=call.command.args[0]))

    @_handles("reset")
    async def _reset(self, call: CommandCall) -> CommandResult:
        key = call.state_key
        return CommandResult(
            say("Done: this conversation starts afresh. Your history is untouched."),
            effect=lambda conn: chats.reset(conn, key),
        )

    @_handles("sources")
    async def _sources(self, call: CommandCall) -> CommandResult:
        if not call.state.last_sources:
            return CommandResult(say("My last answer in this chat used no sources (or there was none yet)."))
        return CommandResult(sources_text(call.state.last_sources))

    @_handles("model")
    async def _model(self, call: CommandCall) -> CommandResult:
        names = self.model_names
        current = call.state.model if call.state.model in names else self.default_model
        if not call.command.args:
            return CommandResult(
                say("Model for this chat: {model}. Available: {names}.", model=current, names=", ".join(names))
            )
        wanted = call.command.args[0]
        if wanted not in names:
            return CommandResult(
                say("There is no model {model}. Available: {names}.", model=repr(wanted), names=", ".join(names))
            )
        key = call.state_key
        return CommandResult(
            say("This chat now uses {model}.", model=wanted), effect=lambda conn: chats.set_model(conn, key, wanted)
        )

    @_handles("compare")
    async def _compare(self, call: CommandCall) -> CommandResult:
        """Both models, concurrently, on one retrieval; the reply shows each answer with what it cost."""
        try:
            request = parse_compare(call.command.args, self.model_names)
            # Two turns more than are replayed: enough to find the last question when none is given.
            turns = await call.load_turns(call.recent_turns + 2)
            question, context = question_and_context(request, turns, call.recent_turns)
        except CompareError as exc:
            return CommandResult(str(exc))
        scopes = call.command.scopes  # in a group: the room's conversation, never the asker's own history
        answers = await self.pipeline.compare(
            scopes, call.person_name, question, list(request.models), context, call.progress, call.zone
        )
        citations = merged_citations(answers)
        key = call.state_key
        series = [
            charts.ChartSeries.of(answer.trace, used)
            for answer in answers
            if answer.trace is not None and (used := usage_of(answer)) is not None
        ]
        return CommandResult(
            format_comparison(question, answers),
            citations,
            # A comparison is not a turn of the conversation, but /sources explains it.
            effect=lambda conn: chats.set_last_sources(conn, key, citations),
            answers=answers,
            outcome="compared",
            images=await _picture("compare.png", charts.compare_chart, series) if series else [],
        )

    @_handles("usage")
    async def _usage(self, call: CommandCall) -> CommandResult:
        if call.command.room is not None:
            return CommandResult(say(ONLY_IN_DIRECT, name="usage"))
        if self.usage is None:
            return CommandResult(say("Usage is not recorded here."))
        args = call.command.args
        try:
            days = int(args[0]) if args else 7
        except ValueError:
            days = 0
        if not 1 <= days <= 366:
            return CommandResult(say("Usage: /usage [DAYS], with DAYS from 1 to 366 (default 7)."))
        rows = await self.usage.summary(call.command.person, days)
        images = await _picture("usage.png", charts.usage_chart, rows) if rows else []
        return CommandResult(format_summary(rows, days), images=images)

    @_handles("forget")
    async def _forget(self, call: CommandCall) -> CommandResult:
        if call.command.room is not None:
            return CommandResult(say(ONLY_IN_DIRECT, name="forget"))
        person = call.command.person
        try:
            selector = parse_forget(call.command.args, datetime.now(UTC))
        except ValueError as exc:
            return CommandResult(f"{exc}\n{say(FORGET_USAGE)}")
        count = await self.history.count(person, selector)
        if count == 0:
            return CommandResult(say("Nothing in your history matches {what}.", what=selector.describe()))
        action = {"action": "forget", "person": person, "selector": _selector_to_json(selector)}
        key = call.state_key
        return CommandResult(
            say(
                "This will permanently delete {count} piece(s) of your history ({what}). Reply “yes” within 5 "
                "minutes to confirm, or “no” to cancel.",
                count=count,
                what=selector.describe(),
            ),
            effect=lambda conn: chats.set_pending(conn, key, action),
        )

    @_handles("confirm")
    async def _confirm(self, call: CommandCall) -> CommandResult:
        person = call.command.person
        pending = call.state.pending_for(person)
        key = call.state_key
        clear: Effect = lambda conn: chats.set_pending(conn, key, None)  # noqa: E731
        if pending is None or pending.get("action") != "forget":
            return CommandResult(say("There is nothing waiting for confirmation."), effect=clear)
        selector = _selector_from_json(pending["selector"])
        deleted = await self.history.forget(person, selector)
        log.info("person %s deleted %d history records (%s)", person, deleted, selector.describe())

        def effect(conn: Connection) -> None:
            clear(conn)
            if selector.everything:
                chats.reset(conn, key)

        done = say("Deleted {count} piece(s) of your history ({what}).", count=deleted, what=selector.describe())
        return CommandResult(done, effect=effect)

    @_handles("cancel")
    async def _cancel(self, call: CommandCall) -> CommandResult:
        key = call.state_key
        cancelled = say("Cancelled; nothing was deleted.")
        return CommandResult(cancelled, effect=lambda conn: chats.set_pending(conn, key, None))

    @_handles("import")
    async def _import(self, call: CommandCall) -> CommandResult:
        attachments = call.message.attachments
        if not attachments:
            return CommandResult(say("Send the file itself (a chat export or a document) and I will import it."))
        # A document sent into a group is the group's: it joins the room's history, not the sender's own.
        target = call.command.scopes[0]
        documents = [a for a in attachments if not (call.command.room and a.is_media)]
        lines = [
            await self._keep_sent(call.message, target, attachment)
            if attachment.mime_type.startswith(("image/", "video/"))
            else await self._import_one(target, attachment)
            for attachment in documents
        ]
        if call.command.room:
            lines.append(say("It is now part of this group's history: my answers here may use it."))
        return CommandResult("\n".join(lines))

    @_handles("share")
    async def _share(self, call: CommandCall) -> CommandResult:
        """The only way a person's own history reaches a group: their explicit /share, naming who reads it."""
        if call.command.room is None:
            return CommandResult(say(ONLY_IN_GROUP, name="share"))
        key, person = call.message.chat_key, call.command.person
        members = await call.members()
        who = members.describe() if members is not None else say("I cannot see who is in this group.")
        shared = (
            say(
                "Done, {name}: my answers in this group may still use your own history too, and everyone here reads "
                "them.",
                name=call.person_name,
            )
            if person in call.command.shared
            else say(
                "Done, {name}: my answers in this group may use your own history too, and everyone here reads them.",
                name=call.person_name,
            )
        )
        return CommandResult(
            f"{shared} {who} {say('Send /unshare to undo it.')}",
            effect=lambda conn: chats.share(conn, key, person),
        )

    @_handles("unshare")
    async def _unshare(self, call: CommandCall) -> CommandResult:
        if call.command.room is None:
            return CommandResult(say(ONLY_IN_GROUP, name="unshare"))
        key, person = call.message.chat_key, call.command.person
        if person not in call.command.shared:
            return CommandResult(
                say("Your history is not shared in this group: my answers here use only what was said here.")
            )
        return CommandResult(
            say("Done: my answers in this group no longer use your history, only what was said here."),
            effect=lambda conn: chats.unshare(conn, key, person),
        )

    @_handles("empty")
    async def _empty(self, call: CommandCall) -> CommandResult:
        return CommandResult(say(EXAMPLE))

    @_handles("too_long")
    async def _too_long(self, call: CommandCall) -> CommandResult:
        length = int(call.command.args[0]) if call.command.args else 0
        return CommandResult(
            say(
                "Your message is {length} characters long; I read questions of up to {limit}. Please ask a shorter "
                "question, or send a long text as a file (.txt) in a direct chat and I will add it to your history.",
                length=format(length, ","),
                limit=format(MAX_TEXT_CHARS, ","),
            )
        )

    @_handles("unproven")
    async def _unproven(self, call: CommandCall) -> CommandResult:
        what = call.command.args[0] if call.command.args else "that"
        action = say("Confirming") if what == "confirm" else f"/{what}"
        return CommandResult(
            say(
                "{action} changes your history, so I take it only from a sender I can prove myself, and I could not "
                "prove this message's: it came with another server's word only, or with a signature that does not "
                "cover its subject and framing. By mail: send it from your own provider, with a DKIM signature of "
                "your domain over the whole mail (most providers sign every mail so).",
                action=action,
            )
        )

    async def _keep_sent(self, message: IncomingMessage, person: str, attachment: Attachment) -> str:
        """A photo or video sent without words: kept as a record that it was sent (its name, when, by whom), as an
        export's media lines are, so "when did I send the photo of the receipt?" finds it by the words around it."""
        record = HistoryRecord(
            id=f"media:{message.channel}:{message.platform_message_id}:{attachment.name}",
            person=person,
            channel=message.channel,
            conversation=f"Confide chat ({message.channel})",
            author="me",
            time=message.time,
            text=media.describe([attachment.name]),
            source=f"{CONFIDE_SOURCE_PREFIX}{message.chat_key}",
            link=message.platform_message_id,
            extra={"media": attachment.mime_type},
        )
        await self.history.add(person, [record])
        kind = media.kind_of(attachment.name)
        noted = say("{name}: noted in your history that you sent this {kind}.", name=attachment.name, kind=kind)
        return f"{noted} {say(PHOTOS_UNREAD)}"

    async def _import_one(self, person: str, attachment: Attachment) -> str:
        if attachment.mime_type.startswith("audio/"):
            if self.hearing is None:
                return f"{attachment.name}: {say(NO_TRANSCRIBER)}"
            return say("{name}: send a voice message on its own, and I answer what it asks.", name=attachment.name)
        if not attachment.path or self.find_source is None:
            return say("{name}: I could not get the file itself, so nothing was imported.", name=attachment.name)
        source = self.find_source(Path(attachment.path), person, self.imports)  # checked: its detection
        if source is None:
            return say(
                "{name}: I don't know this kind of file. I read WhatsApp and Telegram exports, mbox files and .txt, "
                ".md, .pdf, .docx and .html documents.",
                name=attachment.name,
            )
        job = ImportJob(person, f"{source.kind} {attachment.name}", source)
        try:
            summary = await import_into(self.history, job, self.hearing)
        except (ValueError, OSError) as exc:  # an unreadable file: tell the person, nothing is damaged
            log.warning("import of %s for %s failed: %s", attachment.name, person, exc)
            return say("{name}: could not import it ({reason}). Nothing was changed.", name=attachment.name, reason=exc)
        except Exception:  # importers report bad input as problems; this is a bug, and the chat must still answer
            log.exception("import of %s for %s failed", attachment.name, person)
            return say(
                "{name}: the import stopped on an error (see the log). What was imported is kept.", name=attachment.name
            )
        problems = " " + say("First problem: {problem}", problem=summary.errors[0]) if summary.errors else ""
        return f"{summary.describe()} ({attachment.name}, {source.kind}){problems}"


_missing = {s.name for s in command_table.COMMANDS} - set(_HANDLERS)
if _missing:
    raise RuntimeError(f"commands without a handler: {sorted(_missing)}")


def parse_forget(args: tuple[str, ...], now: datetime) -> Selector:
    if not args:
        raise ValueError(say("What should I forget?"))
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
            raise ValueError(say("The second date must come after the first."))
        return Selector(since=since, until=until)
    if kind == "last" and len(rest) == 1:
        return Selector(since=now - parse_span(rest[0]))
    raise ValueError(say("I did not understand “/forget {args}”.", args=" ".join(args)))


def parse_date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(say("“{text}” is not a date like 2024-05-31 or 2024-05-31T14:00.", text=text)) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_span(text: str) -> timedelta:
    match = re.fullmatch(r"(\d{1,5})\s*([mhdw])", text.lower())
    if not match:
        raise ValueError(say("“{text}” is not a span like 30m, 2h, 3d or 1w.", text=text))
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


def sources_text(sources: list[Citation]) -> str:
    """/sources: each sentence of the last answer, then the excerpts that say it, quoted. Sources kept before
    answers were checked sentence by sentence (no claims) are listed as they were."""
    lines = [say("My last answer was based on:")]
    said: set[str] = set()
    for citation in sources:
        for claim in citation.claims:
            if claim in said:
                continue
            said.add(claim)
            lines.append(f"\n“{claim}”")
            lines += [f"  {c.label()}\n      > {c.excerpt}" for c in sources if claim in c.claims]
    lines += [f"{c.label()}\n    “{c.excerpt}”" for c in sources if not c.claims]
    return "\n".join(lines)
