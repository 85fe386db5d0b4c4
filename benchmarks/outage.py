"""A model outage under load: people keep asking while the model server is gone for five minutes.

    .venv/bin/python benchmarks/outage.py [--chats 30] [--every 10] [--before 20] [--outage 300] [--after 60]

`--chats` people each ask a question every `--every` seconds (staggered) through an adapter that edits sent
messages as Telegram and Matrix do. After `--before` seconds the model server (the tests' OpenAI-compatible
stream server on loopback, answering in chunks) is stopped outright: its port refuses connections, as a vLLM
being restarted does. It comes back on the same port after `--outage` seconds; questions go on for `--after`
seconds more; then the run waits until nothing is unanswered and no answer is owed. Confide runs as
`confide serve` assembles it (bridge.app.assemble) with the default CONFIDE_MODEL_WAIT_S (300 s) unless
`--wait` says otherwise. Prints, per question as the person finally sees it:

    outage: O s, Q questions (D asked during it): answered A, fallback then answered F, final fallback X,
    duplicated U, longest wait W s

Goal: X = 0 and U = 0 (no one is left with a fallback; every answer is shown once).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bridge  # noqa: F401  (telemetry off before any model import)
from bridge import reanswer
from bridge.adapter import Capabilities, InboxPort
from bridge.app import Running, assemble
from bridge.config import ModelSettings, PersonSettings, load_settings
from bridge.messages import HistoryRecord, IncomingMessage, OutgoingReply
from bridge.reanswer import FOLLOW_UP
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


async def run(args: argparse.Namespace, workdir: Path) -> str:
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
            await running.history.add(f"p{i}", [note])
        work = asyncio.create_task(running.bridge.run())
        await adapter.ready.wait()
        start = time.monotonic()
        down, up = start + args.before, start + args.before + args.outage
        asking = asyncio.create_task(ask_for(adapter, args.chats, args.every, up + args.after, (down, up)))
        await asyncio.sleep(max(0.0, down - time.monotonic()))
        await llm.stop()
        print(f"  model server stopped at {down - start:.0f} s", file=sys.stderr)
        await asyncio.sleep(max(0.0, up - time.monotonic()))
        await llm.start()  # the same port: the configured endpoint is back
        print(f"  model server back at {up - start:.0f} s", file=sys.stderr)
        await asking
        while True:  # polled: "settled" spans the inbox, the outbox and the answers owed
            if await settled(running, adapter):
                break
            await asyncio.sleep(1.0)
        print(f"  everything answered at {time.monotonic() - start:.0f} s", file=sys.stderr)
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
    await llm.stop()
    return summarise(adapter, args.outage)


async def settled(running: Running, adapter: EditingAdapter) -> bool:
    owed = await reanswer.owed(running.inbox, limit=1)
    answered = all(any(is_answer(t[-1]) for t in s.messages.values()) for s in adapter.questions.values())
    return answered and not owed and await running.idle("telegram")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=30)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between one chat's questions")
    parser.add_argument("--before", type=float, default=20.0, help="seconds of normal service before the outage")
    parser.add_argument("--outage", type=float, default=300.0, help="seconds the model server is gone")
    parser.add_argument("--after", type=float, default=60.0, help="seconds of questions after it is back")
    parser.add_argument("--wait", type=float, default=300.0, help="CONFIDE_MODEL_WAIT_S")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="confide-outage-") as workdir:
        print(asyncio.run(run(args, Path(workdir))))


if __name__ == "__main__":
    main()
