"""Handling one claimed message: route it, run its command or answer it, and finish it with its reply.

Commands and questions share one path: a streaming one (a question, /compare) shows its reply growing;
every one ends with its reply, what to remember and the usage of the model answers in it, committed in
one transaction with marking the message done.

Groups: every member's message is indexed into the room's own scope (the router's Remember, and the
questions asked there), a question there is answered only from the scopes the router gave it (the room, and
the histories shared into it), and each member's chat memory is their own (bridge.state.chats.state_key).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from bridge.answering.answer import Answer, Progress, usage_of
from bridge.answering.scopes import holds_anything
from bridge.commands import command_table
from bridge.commands.handlers import CommandCall, CommandResult, Effect
from bridge.dispatch import reanswer
from bridge.dispatch.at_work import now_at_work
from bridge.dispatch.inbox import Claimed
from bridge.dispatch.live_reply import LiveReply
from bridge.dispatch.outbox import enqueue_reply
from bridge.dispatch.router import Command, Ignore, Question, Remember, RouteContext, route
from bridge.history.store import CONFIDE_SOURCE_PREFIX
from bridge.intake.adapter import Adapter, EditsSent, ListsMembers, Members
from bridge.intake.hearing import heard_prefix
from bridge.language.catalog import N_, say, speaking
from bridge.language.detect import language_of
from bridge.messages import HistoryRecord, IncomingMessage, OutgoingReply
from bridge.services import Services
from bridge.state import chats, usage
from bridge.state.chats import ChatState, Turn, state_key
from bridge.state.store import Connection
from bridge.state.usage import AnswerUsage

log = logging.getLogger(__name__)

_REPLY_NS = uuid.UUID("0b7e4f0e-8a53-4b8e-bb3c-2d7c9d4f6a01")

GAVE_UP_FAILED = N_(
    "Sorry, I could not answer this message: it failed three times in a row. The error is in Confide's log; "
    "please send it again later, or tell whoever runs Confide."
)
GAVE_UP_INTERRUPTED = N_(
    "Sorry, I could not answer this message: Confide stopped unexpectedly each time it worked on it. It is in "
    "Confide's log; please tell whoever runs Confide."
)
GROUP_ONLY = N_("I only answer from what was said in this group here; ask me in a direct chat for your own history.")

Work = Callable[[Progress], Awaitable[CommandResult]]


class MessageHandler:
    def __init__(self, services: Services, adapters: Mapping[str, Adapter], on_queued: Callable[[str], None]) -> None:
        self.inbox = services.inbox
        self.drafts = services.drafts
        self.chats = services.chats
        self.directory = services.directory
        self.history = services.history
        self.pipeline = services.pipeline
        self.commands = services.commands
        self.adapters = adapters
        self.options = services.options
        self.metrics = services.metrics
        self.on_queued = on_queued  # a reply of this channel waits in the outbox

    async def handle(self, claimed: Claimed) -> None:
        message = claimed.message
        person = self.directory.person_for(message.account)
        state = await self.chats.load(state_key(message.chat_key, person, message.is_direct))
        shared = frozenset() if message.is_direct else await self.chats.shared(message.chat_key)
        bot_names = self.adapters[message.channel].bot_names
        decision = route(message, RouteContext(person, state.pending_for(person) is not None, bot_names, shared))
        if isinstance(decision, Ignore):
            _log_ignored(message, decision)
            await self._finish(claimed, f"ignored: {decision.reason}", [])
            return
        if isinstance(decision, Remember):
            record = room_record(message, decision.room, decision.text, self._author(person, message))
            await self.history.add(decision.room, [record])
            await self._finish(claimed, "remembered", [])
            return
        work: Work
        if isinstance(decision, Question):
            work, streams, outcome = partial(self._answer, claimed, decision, state), True, "answered"
        else:
            work = partial(self._command, claimed, decision, state)
            streams, outcome = command_table.spec(decision.name).streams, f"command: {decision.name}"
            if not streams:
                await now_at_work()  # a streaming command (/compare) is at work once its model requests go out
        await self._respond(claimed, decision.person, outcome, streams, work)

    async def language_for(self, message: IncomingMessage) -> str | None:
        """The language to reply in (bridge/language/catalog.py): the message's own where it can be told, and then
        remembered for this chat; else the person's setting; else the language they last wrote in here."""
        person = self.directory.person_for(message.account)
        if person is None:
            return None  # a stranger is not answered at all
        key = state_key(message.chat_key, person, message.is_direct)
        said = language_of(message.text) if not message.text.lstrip().startswith("/") else None
        last = (await self.chats.load(key)).language
        if said is not None and said != last:
            await self.inbox.transact(lambda conn: chats.set_language(conn, key, said))
        return said or self.directory.language(person) or last

    async def not_heard(self, claimed: Claimed, text: str) -> None:
        """A voice message the hearing stage could not turn into words: the reply says so."""
        await self._finish(claimed, "not heard", [reply_to(claimed.message, text)])

    async def give_up(self, claimed: Claimed, interrupted: bool = False) -> None:
        """The last attempt failed: say so in words, so the person is not left waiting (the log has the details)."""
        text = say(GAVE_UP_INTERRUPTED if interrupted else GAVE_UP_FAILED)
        await self._finish(claimed, "failed", [reply_to(claimed.message, text, suffix="error")])

    async def _answer(
        self, claimed: Claimed, question: Question, state: ChatState, progress: Progress
    ) -> CommandResult:
        message, key, scopes = claimed.message, state.chat_key, question.scopes
        if question.room is not None and not await holds_anything(self.history, scopes):
            await self._remember_asked(message, question)
            return CommandResult(say(GROUP_ONLY), outcome="not answered: nothing in this group")
        model = state.model if state.model in self.pipeline.models.names() else self.options.default_model
        turns = await self.chats.recent_turns(key, self.options.recent_turns)
        name = self.directory.name(question.person)
        zone = self.directory.zone(question.person)
        answer = await self.pipeline.answer(scopes, name, question.text, model, turns, progress, zone)
        if question.room is not None and answer.abstained:
            answer = replace(answer, text=say(GROUP_ONLY))
        await self._remember_asked(message, question)

        def remember(conn: Connection) -> None:
            # "Nothing found" is no turn of the conversation: replayed, it talks the model out of evidence that
            # arrives later (a small model repeats it although the note is now in its excerpts). Nor is a fallback,
            # whose real answer is owed until the model is back.
            if answer.fallback:
                reanswer.record(conn, claimed.inbox_id, answer.model)
            elif not answer.abstained:
                chats.add_turns(conn, key, question.text, answer.text)
            chats.set_last_sources(conn, key, answer.citations)

        outcome = "fallback" if answer.fallback else "abstained" if answer.abstained else "answered"
        return CommandResult(answer.text, answer.citations, remember, [answer], outcome, answer.model)

    async def pay(self, owed: reanswer.Owed) -> bool:
        """Answer a question that got the fallback, now that its model may be back; True once the follow-up is
        queued (the debt is paid in its transaction), False while the model still cannot answer."""
        with speaking(await self.language_for(owed.message)):
            return await self._pay(owed)

    async def _pay(self, owed: reanswer.Owed) -> bool:
        message = owed.message
        person = self.directory.person_for(message.account)
        decision = route(message, RouteContext(person, False, self.adapters[message.channel].bot_names,
                                               await self.chats.shared(message.chat_key)))  # fmt: skip
        if not isinstance(decision, Question):
            await self.inbox.transact(lambda conn: reanswer.paid(conn, owed.inbox_id))  # nothing to answer any more
            return True
        key = state_key(message.chat_key, person, message.is_direct)
        turns = await self.chats.recent_turns(key, self.options.recent_turns)
        name = self.directory.name(decision.person)
        zone = self.directory.zone(decision.person)
        answer = await self.pipeline.answer(decision.scopes, name, decision.text, owed.model, turns, zone=zone)
        if answer.fallback:
            return False
        answered = say(GROUP_ONLY) if decision.room is not None and answer.abstained else answer.text
        text = say(reanswer.FOLLOW_UP) + heard_prefix(message) + answered
        token = await self._fallback_edit_token(owed)
        reply = reply_to(
            message, text, suffix="reanswer", citations=answer.citations, model=answer.model, edit_token=token
        )

        def settle(conn: Connection) -> None:
            if not reanswer.paid(conn, owed.inbox_id):
                return  # another worker paid it meanwhile: its follow-up and turns stand, once
            enqueue_reply(conn, reply, owed.inbox_id)
            if not answer.abstained:
                chats.add_turns(conn, key, decision.text, answer.text)

        await self.inbox.transact(settle)
        self.on_queued(reply.channel)
        how = "in place of" if token else "after"
        log.info("answered %s/%s %s its fallback", message.channel, message.platform_message_id, how)
        return True

    async def _fallback_edit_token(self, owed: reanswer.Owed) -> str | None:
        """Where the platform can edit a sent message: the token that replaces the delivered fallback."""
        adapter = self.adapters[owed.message.channel]
        if not isinstance(adapter, EditsSent):
            return None
        receipt = await self.inbox.transact(lambda conn: reanswer.fallback_receipt(conn, owed.inbox_id))
        return adapter.edit_token_for(receipt) if receipt else None

    async def _remember_asked(self, message: IncomingMessage, question: Question) -> None:
        """A question is its asker's words: in a group the room's (every member read it), else the person's own."""
        if question.room is not None:
            author = self._author(question.person, message)
            await self.history.add_asked(question.room, question_record(message, question, question.room, author))
        elif self.options.index_conversations:
            await self.history.add_asked(question.person, question_record(message, question))

    def _author(self, person: str | None, message: IncomingMessage) -> str:
        """How a group message's sender is named in the room's history: a person by name, others by account."""
        return self.directory.name(person) if person is not None else message.sender

    async def _command(self, claimed: Claimed, command: Command, state: ChatState, progress: Progress) -> CommandResult:
        key, message = state.chat_key, claimed.message

        async def load_turns(count: int) -> list[Turn]:
            return await self.chats.recent_turns(key, count)

        async def members() -> Members | None:
            return await self._members(message)

        name = self.directory.name(command.person)
        call = CommandCall(
            command, message, state, name, self.options.recent_turns, load_turns, progress, members,
            self.directory.zone(command.person),
        )  # fmt: skip
        return await self.commands.run(call)

    async def _members(self, message: IncomingMessage) -> Members | None:
        """Who is in the message's group, where the adapter can tell; None where it cannot (or fails to)."""
        adapter = self.adapters[message.channel]
        if not isinstance(adapter, ListsMembers):
            return None
        try:
            return await adapter.members(message.chat_id)
        except Exception:
            log.warning("listing the members of %s failed", message.chat_key, exc_info=True)
            return None

    async def _respond(self, claimed: Claimed, person: str, outcome: str, streams: bool, work: Work) -> None:
        """Run the work (showing its reply grow if it streams), then finish with its reply and usage."""
        started = time.monotonic()
        live = await LiveReply.start(self.adapters[claimed.message.channel], claimed, self.drafts) if streams else None
        result = await work(live.update if live is not None else _ignore)
        used = [u for u in map(usage_of, result.answers) if u is not None]
        text = heard_prefix(claimed.message) + result.text  # a voice message: what was understood comes first
        reply = reply_to(claimed.message, text, citations=result.citations, model=result.model, images=result.images)
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

    def combined(conn: Connection) -> None:
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


def question_record(
    message: IncomingMessage, question: Question, scope: str | None = None, author: str = "me"
) -> HistoryRecord:
    """The person's question, as part of their own history: their words ("my locker code is 4711, remember it");
    asked in a group, part of the room's (`scope`), by its `author`.

    Confide's answers are never indexed: what Confide said is no evidence, and one invented answer would
    otherwise become a "source" that outranks the real document from then on. The answers stay in the chat's
    turns (recent context, /sources).
    """
    return HistoryRecord(
        id=f"q:{message.channel}:{message.platform_message_id}",
        person=scope or question.person,
        channel=message.channel,
        conversation=f"Confide chat ({message.channel})",
        author=author,
        time=message.time,
        text=question.text,
        source=f"{CONFIDE_SOURCE_PREFIX}{message.chat_key}",
        link=message.platform_message_id,
        # A voice message's record: its transcript, marked so, with the file it came from.
        transcribed=message.heard is not None,
        audio=message.heard.file if message.heard is not None else None,
    )


def room_record(message: IncomingMessage, scope: str, text: str, author: str) -> HistoryRecord:
    """A group message as part of the room's own history (its source: the chat, as `confide import` names it)."""
    return HistoryRecord(
        id=f"m:{message.channel}:{message.platform_message_id}",
        person=scope,
        channel=message.channel,
        conversation=f"Group chat ({message.channel})",
        author=author,
        time=message.time,
        text=text,
        source=message.chat_key,
        link=message.platform_message_id,
    )
