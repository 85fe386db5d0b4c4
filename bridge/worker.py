"""The bridge at work: inbox -> router -> commands or answer pipeline -> outbox -> adapter.

One task per chat with pending messages works that chat's messages in order; chats run side by side,
bounded only by each model's concurrency. A finished message and its reply are committed together,
so after a crash unfinished messages are worked again and no reply is queued twice.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge import chats, usage
from bridge.adapter import Adapter
from bridge.answer import Answer, AnswerPipeline
from bridge.chats import Chats
from bridge.commands import Commands
from bridge.compare import (
    CompareError,
    format_comparison,
    merged_citations,
    parse_compare,
    question_and_context,
    usage_of,
)
from bridge.history import HistoryIndex
from bridge.inbox import Claimed, Inbox
from bridge.messages import HistoryRecord, IncomingMessage, OutgoingReply
from bridge.metrics import Metrics
from bridge.outbox import Drafts, Outbox
from bridge.persons import Directory
from bridge.router import Command, Ignore, Question, RouteContext, route
from bridge.usage import AnswerUsage

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
MAX_DELIVERY_ATTEMPTS = 8
_REPLY_NS = uuid.UUID("0b7e4f0e-8a53-4b8e-bb3c-2d7c9d4f6a01")


@dataclass(frozen=True)
class WorkerOptions:
    default_model: str
    recent_turns: int = 6
    index_conversations: bool = True
    edit_interval_s: float = 1.0


class Bridge:
    def __init__(
        self,
        inbox: Inbox,
        outbox: Outbox,
        drafts: Drafts,
        chat_store: Chats,
        directory: Directory,
        history: HistoryIndex,
        pipeline: AnswerPipeline,
        commands: Commands,
        adapters: list[Adapter],
        options: WorkerOptions,
        metrics: Metrics | None = None,
    ) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.drafts = drafts
        self.chats = chat_store
        self.directory = directory
        self.history = history
        self.pipeline = pipeline
        self.commands = commands
        self.adapters = {a.channel: a for a in adapters}
        self.options = options
        self.metrics = metrics or Metrics()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._delivery_events = {channel: asyncio.Event() for channel in self.adapters}

    async def run(self) -> None:
        """Recover, then dispatch, deliver and run every adapter until cancelled."""
        await self.inbox.recover()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._dispatch(), name="confide-dispatch")
                for channel, adapter in self.adapters.items():
                    self._delivery_events[channel].set()  # deliver what a previous run left behind
                    group.create_task(self._deliver(adapter), name=f"confide-deliver-{channel}")
                    group.create_task(adapter.run(self.inbox), name=f"confide-adapter-{channel}")
        finally:
            # Chat tasks live outside the group (they come and go); they stop with the bridge.
            chats = list(self._running.values())
            for task in chats:
                task.cancel()
            await asyncio.gather(*chats, return_exceptions=True)

    # -- dispatch -------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            self.inbox.changed.clear()
            for chat_key in await self.inbox.pending_chats(exclude=set(self._running)):
                if chat_key.partition(":")[0] not in self.adapters:
                    continue  # that platform is not running in this process; its messages wait
                self._running[chat_key] = asyncio.create_task(self._work_chat(chat_key), name=f"chat-{chat_key}")
            await self.inbox.changed.wait()

    async def _work_chat(self, chat_key: str) -> None:
        try:
            while (claimed := await self.inbox.claim_next(chat_key)) is not None:
                await self._work_message(claimed)
        except Exception:
            log.exception("chat %s stopped on an unexpected error; it resumes on the next message", chat_key)
        finally:
            self._running.pop(chat_key, None)
            self.inbox.changed.set()

    async def _work_message(self, claimed: Claimed) -> None:
        message = claimed.message
        try:
            await self.handle(claimed)
        except Exception as exc:
            self.metrics.error("message")
            log.exception(
                "message %s/%s failed (attempt %d/%d)",
                message.channel,
                message.platform_message_id,
                claimed.attempts,
                MAX_ATTEMPTS,
            )
            if claimed.attempts >= MAX_ATTEMPTS:
                text = f"Sorry, I could not process your message ({type(exc).__name__}). It has been logged."
                await self._finish(claimed, "failed", [self._reply(message, text, suffix="error")])
            else:
                await asyncio.sleep(0.5 * claimed.attempts)

    # -- handling one message --------------------------------------------------------------------

    async def handle(self, claimed: Claimed) -> None:
        message = claimed.message
        person = self.directory.person_for(message.account)
        state = await self.chats.load(message.chat_key)
        adapter = self.adapters[message.channel]
        context = RouteContext(person, state.pending_for(person) is not None, adapter.bot_names)
        decision = route(message, context)
        if isinstance(decision, Ignore):
            level = logging.WARNING if decision.reason == "unknown sender" else logging.DEBUG
            log.log(
                level,
                "ignored %s from %s in %s: %s",
                message.platform_message_id,
                message.account,
                message.chat_key,
                decision.reason,
            )
            await self._finish(claimed, f"ignored: {decision.reason}", [])
            return
        if isinstance(decision, Command) and decision.name == "compare":
            await self._compare(claimed, decision)
            return
        if isinstance(decision, Command):
            result = await self.commands.run(decision, message, state)
            reply = self._reply(message, result.text, citations=result.citations)
            await self._finish(claimed, f"command: {decision.name}", [reply], result.effect)
            return
        assert isinstance(decision, Question)
        await self._answer(claimed, decision, state.model)

    async def _answer(self, claimed: Claimed, question: Question, chosen_model: str | None) -> None:
        message = claimed.message
        started = time.monotonic()
        model = chosen_model if chosen_model in self.pipeline.models.names() else self.options.default_model
        turns = await self.chats.recent_turns(message.chat_key, self.options.recent_turns)
        progress = await self._progress(claimed)
        answer = await self.pipeline.answer(
            question.person, self.directory.name(question.person), question.text, model, turns, progress.update
        )
        if self.options.index_conversations:
            await self.history.add(question.person, conversation_records(message, question, answer))
        used = [u for u in [usage_of(answer)] if u is not None]
        reply = self._reply(message, answer.text, citations=answer.citations, model=answer.model, usage=used)
        reply.edit_token = progress.token

        def remember(conn: sqlite3.Connection) -> None:
            chats.add_turns(conn, message.chat_key, question.text, answer.text)
            chats.set_last_sources(conn, message.chat_key, answer.citations)
            for one in used:
                usage.record(conn, claimed.inbox_id, question.person, one)

        await self._finish(claimed, "fallback" if answer.fallback else "answered", [reply], remember)
        self._count_answers([answer], used, started)

    async def _compare(self, claimed: Claimed, command: Command) -> None:
        """Both models, concurrently, on one retrieval; the reply shows each answer with what it cost."""
        message = claimed.message
        started = time.monotonic()
        keep = self.options.recent_turns
        try:
            request = parse_compare(command.args, self.pipeline.models.names())
            # Two turns more than are replayed: enough to find the last question when none is given.
            turns = await self.chats.recent_turns(message.chat_key, keep + 2)
            question, context = question_and_context(request, turns, keep)
        except CompareError as exc:
            await self._finish(claimed, "command: compare", [self._reply(message, str(exc))])
            return
        progress = await self._progress(claimed)
        name = self.directory.name(command.person)
        answers = await self.pipeline.compare(
            command.person, name, question, list(request.models), context, progress.update
        )
        used = [u for u in map(usage_of, answers) if u is not None]
        citations = merged_citations(answers)
        reply = self._reply(message, format_comparison(question, answers), citations=citations, usage=used)
        reply.edit_token = progress.token

        def remember(conn: sqlite3.Connection) -> None:
            # A comparison is not a turn of the conversation, but /sources explains it.
            chats.set_last_sources(conn, message.chat_key, citations)
            for one in used:
                usage.record(conn, claimed.inbox_id, command.person, one)

        await self._finish(claimed, "compared", [reply], remember)
        self._count_answers(answers, used, started)

    async def _progress(self, claimed: Claimed) -> _Progress:
        adapter = self.adapters[claimed.message.channel]
        progress = _Progress(
            adapter,
            claimed.message,
            await self.drafts.get(claimed.inbox_id),
            self.drafts,
            claimed.inbox_id,
            adapter.capabilities.edit_interval_s or self.options.edit_interval_s,
        )
        await progress.start()
        return progress

    def _count_answers(self, answers: list[Answer], used: list[AnswerUsage], started: float) -> None:
        elapsed = time.monotonic() - started
        for answer in answers:
            self.metrics.answered(answer.model, elapsed)
            if answer.error is not None:
                self.metrics.error("model")
        for one in used:
            self.metrics.usage(one.model, one.prompt_tokens, one.completion_tokens, one.energy_wh)

    async def _finish(
        self,
        claimed: Claimed,
        outcome: str,
        replies: list[OutgoingReply],
        effect: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        await self.inbox.finish(claimed.inbox_id, outcome, replies, effect)
        self.metrics.message(claimed.message.channel, outcome)
        for reply in replies:
            self._delivery_events[reply.channel].set()

    def _reply(
        self,
        message: IncomingMessage,
        text: str,
        suffix: str = "",
        usage: list[AnswerUsage] | None = None,
        **fields: Any,
    ) -> OutgoingReply:
        reply_id = str(uuid.uuid5(_REPLY_NS, f"{message.channel}\x00{message.platform_message_id}\x00{suffix}"))
        # The cost of each model answer travels as metadata: a list, one entry per model (two for /compare).
        extra = {**message.extra, "usage": [u.as_dict() for u in usage]} if usage else message.extra
        return OutgoingReply(
            reply_id=reply_id,
            channel=message.channel,
            chat_id=message.chat_id,
            in_reply_to=message.platform_message_id,
            thread_id=message.thread_id,
            text=text,
            extra=extra,
            **fields,
        )

    # -- delivery --------------------------------------------------------------------------------

    async def _deliver(self, adapter: Adapter) -> None:
        event = self._delivery_events[adapter.channel]
        while True:
            await event.wait()
            event.clear()
            for pending in await self.outbox.pending(adapter.channel):
                try:
                    receipt = await adapter.deliver(pending.reply)
                except Exception as exc:
                    self.metrics.error("delivery")
                    attempts = pending.attempts + 1
                    give_up = attempts >= MAX_DELIVERY_ATTEMPTS
                    log.exception(
                        "delivering reply %s on %s failed (attempt %d)",
                        pending.reply.reply_id,
                        adapter.channel,
                        attempts,
                    )
                    await self.outbox.mark_attempt_failed(pending.outbox_id, repr(exc), give_up)
                    if not give_up:
                        asyncio.get_running_loop().call_later(min(2**attempts, 60), event.set)
                    break
                await self.outbox.mark_sent(pending.outbox_id, receipt)


class _Progress:
    """Shows the growing answer at most once per interval, and remembers the message being edited."""

    def __init__(
        self,
        adapter: Adapter,
        message: IncomingMessage,
        token: str | None,
        drafts: Drafts,
        inbox_id: int,
        interval_s: float,
    ) -> None:
        self.adapter = adapter
        self.message = message
        self.token = token
        self.drafts = drafts
        self.inbox_id = inbox_id
        self.interval_s = interval_s
        self._last = 0.0

    async def start(self) -> None:
        try:
            await self.adapter.typing(self.message)
        except Exception:
            log.warning("typing notice failed in %s", self.message.chat_key, exc_info=True)

    async def update(self, text: str) -> None:
        if not self.adapter.capabilities.can_edit or time.monotonic() - self._last < self.interval_s:
            return
        self._last = time.monotonic()
        try:
            token = await self.adapter.show_partial(self.message, text, self.token)
        except Exception:
            # A lost partial edit costs nothing: the final reply always replaces it.
            log.warning("partial update failed in %s", self.message.chat_key, exc_info=True)
            return
        if token and token != self.token:
            self.token = token
            await self.drafts.save(self.inbox_id, token)


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
