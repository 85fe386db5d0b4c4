"""A model outage under load: people keep asking while the model server is gone, then it comes back.

People ask through an adapter that edits sent messages as Telegram and Matrix do; the model server (the tests'
OpenAI-compatible stream server on loopback) is stopped outright partway (its port refuses connections, as a
vLLM being restarted does) and started again on the same port. Confide runs as `confide serve` assembles it
(bridge.app.assemble). Every question must end with a real answer shown once: no one is left with a fallback
(a fallback is edited into the answer once the model is back), nothing is answered twice.

Short here (a 6 s outage, questions waiting 3 s for the model, so that some get the fallback and have it
replaced); `benchmarks/outage.py` runs five minutes with the default 300 s wait and prints

    outage: O s, Q questions (D asked during it): answered A, fallback then answered F, final fallback X,
    duplicated U, longest wait W s
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bridge.app import Running, assemble
from bridge.config import ModelSettings, PersonSettings, load_settings
from bridge.dispatch import reanswer
from bridge.dispatch.reanswer import FOLLOW_UP
from bridge.intake.adapter import Capabilities, InboxPort
from bridge.messages import HistoryRecord, IncomingMessage, OutgoingReply
from tests.fakes.openai_server import FakeOpenAI

FALLBACK = "⚠ Model unavailable"


@dataclass
class Shown:
    """One question as the person sees it: the messages replying to it, each with its edits."""

    asked_at: float
    during_outage: bool
    messages: dict[str, list[str]] = field(default_factory=dict)  # receipt -> texts shown, in order
    answered_at: float | None = None


class EditingAdapter:
    """A platform that edits sent messages in place (as Telegram and Matrix do), recording what each shows."""

    channel = "telegram"
    capabilities = Capabilities(can_edit=True, edit_interval_s=0.5)
    bot_names = ("@confide_bot",)

    def __init__(self) -> None:
        self.questions: dict[str, Shown] = {}
        self.ready = asyncio.Event()
        self.inbox: InboxPort | None = None

    async def run(self, inbox: InboxPort) -> None:
        self.inbox = inbox
        self.ready.set()
        await asyncio.Event().wait()

    async def ask(self, chat: int, number: int, during_outage: bool) -> None:
        assert self.inbox is not None
        message_id = f"{chat}:{number}"
        self.questions[message_id] = Shown(time.monotonic(), during_outage)
        text = f"question {number} about the boat trip"
        await self.inbox.put(IncomingMessage(channel=self.channel, chat_id=str(chat), sender=str(chat),
                                             platform_message_id=message_id, text=text))  # fmt: skip

    async def deliver(self, reply: OutgoingReply) -> str | None:
        shown = self.questions[reply.in_reply_to or ""]
        receipt = reply.edit_token or f"sent:{reply.reply_id}"
        texts = shown.messages.setdefault(receipt, [])
        if not texts or texts[-1] != reply.text:
            texts.append(reply.text)
        if not reply.text.startswith(FALLBACK) and shown.answered_at is None:
            shown.answered_at = time.monotonic()
        return receipt

    def edit_token_for(self, receipt: str) -> str | None:
        return receipt

    async def show_partial(self, message: IncomingMessage, text: str, edit_token: str | None) -> str | None:
        return edit_token or f"draft:{message.platform_message_id}"

    async def typing(self, message: IncomingMessage) -> None:
        return None


def is_answer(text: str) -> bool:
    return text.removeprefix(FOLLOW_UP).startswith("You asked: question")


def summarise(adapter: EditingAdapter, outage_s: float) -> str:
    answered = fallback_then_answered = final_fallback = duplicated = 0
    for shown in adapter.questions.values():
        finals = [texts[-1] for texts in shown.messages.values()]
        answers = sum(1 for text in finals if is_answer(text))
        had_fallback = any(text.startswith(FALLBACK) for texts in shown.messages.values() for text in texts)
        duplicated += max(0, answers - 1)
        if answers == 0:
            final_fallback += 1
        elif had_fallback:
            fallback_then_answered += 1
        else:
            answered += 1
    waits = [s.answered_at - s.asked_at for s in adapter.questions.values() if s.answered_at is not None]
    during = sum(1 for s in adapter.questions.values() if s.during_outage)
    return (
        f"outage: {outage_s:.0f} s, {len(adapter.questions)} questions ({during} asked during it): answered "
        f"{answered}, fallback then answered {fallback_then_answered}, final fallback {final_fallback}, "
        f"duplicated {duplicated}, longest wait {max(waits, default=0):.0f} s"
    )


async def ask_for(adapter: EditingAdapter, chats: int, every: float, until: float, outage: tuple[float, float]) -> None:
    """Every chat asks every `every` seconds, the chats spread evenly over the interval, until `until`."""
    number = 0
    start = time.monotonic()
    while time.monotonic() < until:
        for chat in range(chats):
            at = start + number * every + chat * every / chats
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            now = time.monotonic()
            await adapter.ask(chat, number, outage[0] <= now < outage[1])
        number += 1


async def run(args: Outage, workdir: Path) -> EditingAdapter:
    llm = await FakeOpenAI(words_per_chunk=2).start()
    persons = [PersonSettings(id=f"p{i}", accounts=[f"telegram:{i}"]) for i in range(args.chats)]
    model = ModelSettings(base_url=llm.base_url, model=llm.model, concurrency=16)
    settings = load_settings(_env_file=None, data_dir=workdir, persons=persons, models={"main": model},
                             model_wait_s=args.wait, retrieval={"min_relevance": 0})  # fmt: skip
    adapter = EditingAdapter()
    async with assemble(settings, [adapter]) as running:
        for i in range(args.chats):
            note = HistoryRecord(id=f"note-{i}", person=f"p{i}", channel="whatsapp", conversation="Boat",
                                 author="Anna", text="The boat trip starts at the pier at nine on Saturday.",
                                 time=datetime(2024, 5, 3, tzinfo=UTC), source="whatsapp:boat.zip")  # fmt: skip
            await running.services.history.add(f"p{i}", [note])
        work = asyncio.create_task(running.dispatcher.run())
        await adapter.ready.wait()
        start = time.monotonic()
        down, up = start + args.before, start + args.before + args.outage
        asking = asyncio.create_task(ask_for(adapter, args.chats, args.every, up + args.after, (down, up)))
        await asyncio.sleep(max(0.0, down - time.monotonic()))
        await llm.stop()
        await asyncio.sleep(max(0.0, up - time.monotonic()))
        await llm.start()  # the same port: the configured endpoint is back
        await asking
        deadline = time.monotonic() + args.wait + 180  # the probe's back-off is at most 30 s, the re-answers' 10 s
        while True:  # polled: "settled" spans the inbox, the outbox and the answers owed
            if await settled(running, adapter) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
    await llm.stop()
    return adapter


async def settled(running: Running, adapter: EditingAdapter) -> bool:
    owed = await reanswer.owed(running.services.inbox, limit=1)
    answered = all(any(is_answer(t[-1]) for t in s.messages.values()) for s in adapter.questions.values())
    return answered and not owed and await running.idle("telegram")


@dataclass(frozen=True)
class Outage:
    """The run's shape, from the environment (benchmarks/outage.py sets a long one)."""

    chats: int = int(os.environ.get("CONFIDE_OUTAGE_CHATS", "5"))
    every: float = float(os.environ.get("CONFIDE_OUTAGE_EVERY_S", "1"))  # seconds between one chat's questions
    before: float = float(os.environ.get("CONFIDE_OUTAGE_BEFORE_S", "2"))  # normal service before the outage
    outage: float = float(os.environ.get("CONFIDE_OUTAGE_S", "6"))  # seconds the model server is gone
    after: float = float(os.environ.get("CONFIDE_OUTAGE_AFTER_S", "2"))  # questions after it is back
    wait: float = float(os.environ.get("CONFIDE_OUTAGE_WAIT_S", "3"))  # CONFIDE_MODEL_WAIT_S


async def test_an_outage_under_load_leaves_no_one_with_a_fallback(tmp_path: Path) -> None:
    shape = Outage()
    adapter = await run(shape, tmp_path)
    line = summarise(adapter, shape.outage)
    print(line)
    counts = dict(re.findall(r"(final fallback|duplicated|fallback then answered) (\d+)", line))
    assert counts["final fallback"] == "0" and counts["duplicated"] == "0", line
    during = [s for s in adapter.questions.values() if s.during_outage]
    assert during and all(s.answered_at is not None for s in adapter.questions.values()), line
    if shape.outage > shape.wait + 1:  # some waited past CONFIDE_MODEL_WAIT_S: each fallback became the answer
        assert counts["fallback then answered"] != "0", line
