"""The whole pipeline under load: 200 chats at once against an instant local OpenAI-compatible stream server.

    .venv/bin/python benchmarks/pipeline.py [--chats 200] [--messages 5] [--concurrency 32] [--rounds 5]

Prints messages/s, p50/p95 latency per message (inbox put -> reply delivered), the peak number of LLM requests
in flight (it must reach the configured concurrency: LLM calls are never serialized), and, in the same run, a
baseline: the same number of streamed requests made directly with the openai client at the same concurrency.
Both are run `--rounds` times in turn and the median round of each is shown (the ratio is of the medians).
The pipeline's work per message is real: state database, routing, hybrid retrieval (embedding the question),
prompt, streaming, outbox, delivery, and indexing the question and answer into the history.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bridge  # noqa: F401  (telemetry off before any model import)
from benchmarks.stats import percentile
from benchmarks.stream_server import StreamServer
from bridge.app import assemble
from bridge.config import ModelSettings, PersonSettings, load_settings
from bridge.intake.adapter import Capabilities, InboxPort
from bridge.messages import IncomingMessage, OutgoingReply
from bridge.models.llm import Delta, ModelClient


class TimedAdapter:
    """A platform whose messages the benchmark puts in; records when each reply was delivered."""

    channel = "telegram"
    capabilities = Capabilities(can_edit=True, edit_interval_s=0.05)
    bot_names = ("@confide_bot",)

    def __init__(self, expected: int) -> None:
        self.delivered_at: dict[str, float] = {}
        self.expected = expected
        self.all_delivered = asyncio.Event()
        self.ready = asyncio.Event()
        self.inbox: InboxPort | None = None

    async def run(self, inbox: InboxPort) -> None:
        self.inbox = inbox
        self.ready.set()
        await asyncio.Event().wait()

    async def send(self, chat: str, text: str, message_id: str) -> None:
        await self.ready.wait()
        assert self.inbox is not None
        message = IncomingMessage(channel=self.channel, chat_id=chat, sender=chat, platform_message_id=message_id,
                                  text=text)  # fmt: skip
        await self.inbox.put(message)

    async def deliver(self, reply: OutgoingReply) -> str | None:
        self.delivered_at.setdefault(reply.in_reply_to or "", time.perf_counter())
        if len(self.delivered_at) >= self.expected:
            self.all_delivered.set()
        return reply.reply_id

    async def show_partial(self, message: IncomingMessage, text: str, edit_token: str | None) -> str | None:
        return edit_token or f"draft-{message.platform_message_id}"

    async def typing(self, message: IncomingMessage) -> None:
        return None


async def run_pipeline(args: argparse.Namespace, llm: StreamServer, workdir: Path) -> dict:
    persons = [PersonSettings(id=f"p{i}", accounts=[f"telegram:{i}"]) for i in range(args.chats)]
    model = ModelSettings(base_url=llm.base_url, model="instant", concurrency=args.concurrency)
    # The relevance gate off: every message must reach the model (the history here is empty or questions only).
    settings = load_settings(_env_file=None, data_dir=workdir, persons=persons, models={"main": model},
                             index_conversations=not args.no_self_index,
                             retrieval={"min_relevance": 0})  # fmt: skip
    total = args.chats * args.messages
    adapter = TimedAdapter(total)
    async with assemble(settings, [adapter]) as running:
        work = asyncio.create_task(running.dispatcher.run())
        sent_at: dict[str, float] = {}
        started = time.perf_counter()
        for round_ in range(args.messages):
            # Each round's messages come from 200 people at once: accepted side by side, as the chats' own
            # connections would deliver them (the inbox commits them in groups).
            sends = []
            for chat in range(args.chats):
                pid = f"{chat}:{round_}"
                sent_at[pid] = time.perf_counter()
                sends.append(adapter.send(str(chat), f"question {round_} about the trip to Lisbon", pid))
            await asyncio.gather(*sends)
        await adapter.all_delivered.wait()
        elapsed = time.perf_counter() - started
        peak = running.services.models.peak_in_flight("main")
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
    latencies = [adapter.delivered_at[pid] - sent_at[pid] for pid in sent_at]
    return {"rate": total / elapsed, "latencies": latencies, "peak": peak, "elapsed": elapsed}


async def run_direct(args: argparse.Namespace, llm: StreamServer) -> dict:
    client = ModelClient({"main": ModelSettings(base_url=llm.base_url, model="instant", concurrency=args.concurrency)})
    messages = [{"role": "user", "content": "Question: question about the trip to Lisbon"}]
    latencies: list[float] = []

    async def one() -> None:
        begin = time.perf_counter()
        async for event in client.stream("main", messages):
            if isinstance(event, Delta):
                pass
        latencies.append(time.perf_counter() - begin)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(args.chats * args.messages)))
    elapsed = time.perf_counter() - started
    peak = client.peak_in_flight("main")
    await client.close()
    return {"rate": len(latencies) / elapsed, "latencies": latencies, "peak": peak, "elapsed": elapsed}


def _median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(results, key=lambda r: r["rate"])[len(results) // 2]


def show(name: str, result: dict[str, Any]) -> None:
    lat = [x * 1000 for x in result["latencies"]]
    print(
        f"{name:<22} {result['rate']:8.1f} msg/s   latency p50 {statistics.median(lat):8.1f} ms"
        f"  p95 {percentile(lat, 0.95):8.1f} ms   peak LLM requests in flight {result['peak']}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--messages", type=int, default=5, help="messages per chat, sent at once (kept in order)")
    parser.add_argument("--concurrency", type=int, default=32, help="the model's configured concurrency")
    parser.add_argument("--no-self-index", action="store_true", help="do not add questions and answers to history")
    parser.add_argument("--rounds", type=int, default=5, help="pipeline and direct loop taken in turn; medians shown")
    args = parser.parse_args()
    llm = await StreamServer(words_per_chunk=4).start()
    pipelines, directs = [], []
    for _ in range(args.rounds):
        # In turn, so a slow spell of this machine falls on both; the direct loop alone varies by a third.
        with tempfile.TemporaryDirectory(prefix="confide-bench-") as workdir:
            pipelines.append(await run_pipeline(args, llm, Path(workdir)))
        directs.append(await run_direct(args, llm))
    await llm.stop()
    pipeline, direct = _median_run(pipelines), _median_run(directs)
    print("rounds (msg/s): pipeline " + " ".join(f"{r['rate']:.1f}" for r in pipelines)
          + " | direct " + " ".join(f"{r['rate']:.1f}" for r in directs))  # fmt: skip
    print(f"{args.chats} chats x {args.messages} messages, model concurrency {args.concurrency}")
    show("Confide pipeline", pipeline)
    show("direct client loop", direct)
    added = [p - d for p, d in zip(sorted(pipeline["latencies"]), sorted(direct["latencies"]), strict=False)]
    print(
        f"added latency per message: p50 {statistics.median(added) * 1000:.1f} ms, "
        f"p95 {percentile(added, 0.95) * 1000:.1f} ms"
    )
    print(f"throughput ratio pipeline/direct: {pipeline['rate'] / direct['rate']:.3f}")
    reached = "reached" if pipeline["peak"] >= args.concurrency else "did NOT reach"
    print(f"peak concurrent LLM requests {pipeline['peak']} {reached} the configured concurrency {args.concurrency}")


if __name__ == "__main__":
    asyncio.run(main())
