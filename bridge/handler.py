"""Handling one claimed message: route it, run its command or answer it, and finish it with its reply.

Commands and questions share one path: a streaming one (a question, /compare) shows its reply growing;
every one ends with its reply, what to remember and the usage of the model answers in it, committed in
one transaction with marking the message done.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from bridge import chats, command_table, usage
from bridge.adapter import Adapter
from bridge.answer import Answer, AnswerPipeline, Progress, usage_of
from bridge.chats import Chats, ChatState, Turn
from bridge.commands import CommandCall, CommandResult, Commands, Effect
from bridge.history import HistoryIndex
from bridge.inbox import Claimed, Inbox
from bridge.messages import HistoryRecord, IncomingMessage, OutgoingReply
from bridge.metrics import Metrics
from bridge.outbox import Drafts
from bridge.persons import Directory
from bridge.progress import LiveReply
from bridge.router import Command, Ignore, Question, RouteContext, route
from bridge.usage import AnswerUsage

log = logging.getLogger(__name__)

_REPLY_NS = uuid.UUID("0b7e4f0e-8a53-4b8e-bb3c-2d7c9d4f6a01")

Work = Callable[[Progress], Awaitable[CommandResult]]


@dataclass(frozen=True)
class WorkerOptions:
    default_model: str
    recent_turns: int = 6
    index_conversations: bool = True


class MessageHandler:
    def __init__(
        self,
        inbox: Inbox,
        drafts: Drafts,
        chat_store: Chats,
        directory: Directory,
        history: HistoryIndex,
        pipeline: AnswerPipeline,
        commands: Commands,
        adapters: Mapping[str, Adapter],
        options: WorkerOptions,
        metrics: Metrics,
        on_queued: Callable[[str], None],
    ) -> None:
        self.inbox = inbox
        self.drafts = drafts
        self.chats = chat_store
        self.directory = directory
        self.history = history
        self.pipeline = pipeline
        self.commands = commands
        self.adapters = adapters
        self.options = options
        self.metrics = metrics
        self.on_queued = on_queued  # a reply of this channel waits in the outbox

    async def handle(self, claimed: Claimed) -> None:
        message = claimed.message
        person = self.directory.person_for(message.account)
        state = await self.chats.load(message.chat_key)
        context = RouteContext(person, state.pending_for(person) is not None, self.adapters[message.channel].bot_names)
        decision = route(message, context)
        if isinstance(decision, Ignore):
            _log_ignored(message, decision)
            await self._finish(claimed, f"ignored: {decision.reason}", [])
            return
        work: Work
        if isinstance(decision, Question):
            work, streams, outcome = partial(self._answer, claimed, decision, state), True, "answered"
        else:
            work = partial(self._command, claimed, decision, state)
            streams, outcome = command_table.spec(decision.name).streams, f"command: {decision.name}"
        await self._respond(claimed, decision.person, outcome, streams, work)

    async def give_up(self, claimed: Claimed, exc: Exception) -> None:
        """The last attempt failed: say so, so the person is not left waiting."""
        text = f"Sorry, I could not process your message ({type(exc).__name__}). It has been logged."
        await self._finish(claimed, "failed", [reply_to(claimed.message, text, suffix="error")])

    async def _answer(
        self, claimed: Claimed, question: Question, state: ChatState, progress: Progress
    ) -> CommandResult:
        message = claimed.message
        model = state.model if state.model in self.pipeline.models.names() else self.options.default_model
        turns = await self.chats.recent_turns(message.chat_key, self.options.recent_turns)
        name = self.directory.name(question.person)
        answer = await self.pipeline.answer(question.person, name, question.text, model, turns, progress)
        if self.options.index_conversations:
            await self.history.add(question.person, conversation_records(message, question, answer))
        key = message.chat_key

        def remember(conn: sqlite3.Connection) -> None:
            chats.add_turns(conn, key, question.text, answer.text)
            chats.set_last_sources(conn, key, answer.citations)

        outcome = "fallback" if answer.fallback else "answered"
        return CommandResult(answer.text, answer.citations, remember, [answer], outcome, answer.model)

    async def _command(self, claimed: Claimed, command: Command, state: ChatState, progress: Progress) -> CommandResult:
        key = claimed.message.chat_key

        async def load_turns(count: int) -> list[Turn]:
            return await self.chats.recent_turns(key, count)

        name = self.directory.name(command.person)
        call = CommandCall(command, claimed.message, state, name, self.options.recent_turns, load_turns, progress)
        return await self.commands.run(call)

    async def _respond(self, claimed: Claimed, person: str, outcome: str, streams: bool, work: Work) -> None:
        """Run the work (showing its reply grow if it streams), then finish with its reply and usage."""
        started = time.monotonic()
        live = await LiveReply.start(self.adapters[claimed.message.channel], claimed, self.drafts) if streams else None
        result = await work(live.update if live is not None else _ignore)
        used = [u for u in map(usage_of, result.answers) if u is not None]
        reply = reply_to(claimed.message, result.text, citations=result.citations, model=result.model)
        reply.edit_token = live.token if live is not None else None
        effect = _with_usage(result.effect, claimed.inbox_id, person, used)
        await self._finish(claimed, result.outcome or outcome, [reply], effect)
        self._count(result.answers, used, started)

    def _count(self, answers: list[Answer], used: list[AnswerUsage], started: float) -> None:
        elapsed = time.monotonic() - started
        for answer in answers:
            self.metrics.answered(answer.model, elapsed)
            if answer.error is not None:
                self.metrics.error("model")
        for one in used:
            self.metrics.usage(one.model, one.prompt_tokens, one.completion_tokens, one.energy_wh)

    async def _finish(
        self, claimed: Claimed, outcome: str, replies: list[OutgoingReply], effect: Effect | None = None
    ) -> None:
        await self.inbox.finish(claimed.inbox_id, outcome, replies, effect)
        self.metrics.message(claimed.message.channel, outcome)
        for reply in replies:
            self.on_queued(reply.channel)


async def _ignore(text: str) -> None:
    """The progress of a command that does not stream: nothing to show."""


def _with_usage(effect: Effect | None, inbox_id: int, person: str, used: list[AnswerUsage]) -> Effect | None:
    """The result's own effect plus the usage rows, so both are kept exactly when the reply is queued."""
    if not used:
        return effect

    def combined(conn: sqlite3.Connection) -> None:
        if effect is not None:
            effect(conn)
        for one in used:
            usage.record(conn, inbox_id, person, one)

    return combined


def _log_ignored(message: IncomingMessage, decision: Ignore) -> None:
    level = logging.WARNING if decision.reason == "unknown sender" else logging.DEBUG
    where = f"{message.platform_message_id} from {message.account} in {message.chat_key}"
    log.log(level, "ignored %s: %s", where, decision.reason)


def reply_to(message: IncomingMessage, text: str, suffix: str = "", **fields: Any) -> OutgoingReply:
    """The reply to a message; its id is derived from the message, so a retried message gets the same reply."""
    reply_id = str(uuid.uuid5(_REPLY_NS, f"{message.channel}\x00{message.platform_message_id}\x00{suffix}"))
    return OutgoingReply(
        reply_id=reply_id,
        channel=message.channel,
        chat_id=message.chat_id,
        in_reply_to=message.platform_message_id,
        thread_id=message.thread_id,
        text=text,
        extra=message.extra,
        **fields,
    )


def conversation_records(message: IncomingMessage, question: Question, answer: Answer) -> list[HistoryRecord]:
    """The question and the answer, as part of the person's own history (live self-indexing)."""
    base = {
        "person": question.person,
        "channel": message.channel,
        "conversation": f"Confide chat ({message.channel})",
        "source": f"confide:{message.chat_key}",
    }
    return [
        HistoryRecord(
            id=f"q:{message.channel}:{message.platform_message_id}",
            author="me",
            time=message.time,
            text=question.text,
            link=message.platform_message_id,
            **base,
        ),
        HistoryRecord(
            id=f"a:{message.channel}:{message.platform_message_id}",
            author="Confide",
            time=message.time,
            text=answer.text,
            **base,
        ),
    ]
