"""A big import while the bot answers: `confide import whatsapp` handed to a running `confide serve` (over its
local socket, as an operator would run it) while a person keeps asking on Telegram (the Bot API server of the
tests); `confide serve` is a real subprocess with the tests' model server. Both must finish: the import's
summary arrives and every question asked meanwhile is answered.

A few hundred messages here; `benchmarks/import_while_serving.py` runs 10,000 and prints

    import while serving: N messages in T s, Q questions during it answered A (p50 P s, p95 R s), both finished
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path

from tests.cli_helpers import kill_if_running, run_cli, start_serve, telegram_serve_env
from tests.fakes.bot_api import FakeTelegram
from tests.fakes.openai_server import FakeOpenAI

USER = 100
WORDS = "boat cabin key pier invoice plumber boiler garden insurance school ticket hotel ferry concert".split()


def write_export(path: Path, count: int) -> None:
    """A WhatsApp (Android) export of `count` messages between two people, a minute or more apart."""
    when = datetime(2023, 1, 13, 8, 0)  # a day after the 12th: the date order is plain from the first line
    lines = []
    for n in range(count):
        when += timedelta(minutes=1 + n % 7)
        author = "Anna" if n % 3 else "Ben"
        text = " ".join(WORDS[(n * 7 + k) % len(WORDS)] for k in range(4 + n % 12))
        lines.append(f"{when:%d/%m/%Y, %H:%M} - {author}: message {n}: {text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def ask(telegram: FakeTelegram, text: str, within_s: float = 300) -> float:
    """Ask, and return the seconds until the bot's reply to it arrived."""
    before = len(telegram.bot_messages(USER))
    started = time.monotonic()
    telegram.push_message(USER, text)
    while len(telegram.bot_messages(USER)) <= before:
        if time.monotonic() - started > within_s:
            raise TimeoutError(f"no answer to {text!r} within {within_s} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def run(messages: int, every: float, workdir: Path) -> tuple[str, list[float]]:
    telegram, llm = await FakeTelegram().start(), await FakeOpenAI(words_per_chunk=4).start()
    env = telegram_serve_env(workdir, telegram, llm, USER)
    export = workdir / "WhatsApp Chat with Anna.txt"
    write_export(export, messages)
    process = await start_serve(env, workdir / "serve.log")
    try:
        if (await run_cli(["health", "--wait", "120"], env)).code != 0:
            raise RuntimeError((workdir / "serve.log").read_text()[-3000:])
        idle = [await ask(telegram, f"idle question {n} about the boat") for n in range(5)]
        started = time.monotonic()
        importing = asyncio.create_task(
            run_cli(["import", "whatsapp", str(export), "--person", "ana"], env, limit_s=3600)
        )
        during: list[float] = []
        while not importing.done():
            during.append(await ask(telegram, f"question {len(during)} during the import about the pier"))
            await asyncio.sleep(every)
        result = await importing
        took = time.monotonic() - started
        process.send_signal(signal.SIGTERM)
        stopped = await asyncio.wait_for(process.wait(), 60)
    finally:
        await kill_if_running(process)
        await telegram.stop()
        await llm.stop()
    summary = [line for line in result.stderr.splitlines() if "Imported" in line]
    finished = result.code == 0 and bool(summary) and stopped == 0
    print(f"  import: exit {result.code}; {summary[-1].strip() if summary else result.stderr[-2000:]}")
    print(f"  answers while idle: p50 {statistics.median(idle):.2f} s, max {max(idle):.2f} s")
    if during:
        print(f"  answers during the import: p50 {statistics.median(during):.2f} s, "
              f"p95 {percentile(during, 0.95):.2f} s, max {max(during):.2f} s")  # fmt: skip
    return (
        f"import while serving: {messages} messages in {took:.0f} s ({messages / took:.0f} msg/s), "
        f"{len(during)} questions during it answered {len(during)} (p50 {statistics.median(during or [0]):.1f} s, "
        f"p95 {percentile(during or [0], 0.95):.1f} s), {'both finished' if finished else 'NOT finished'}"
    ), during


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def test_an_import_while_serving_finishes_and_every_question_meanwhile_is_answered(tmp_path: Path) -> None:
    messages = int(os.environ.get("CONFIDE_IMPORT_SERVING_MESSAGES", "400"))  # the benchmark sets 10,000
    every = float(os.environ.get("CONFIDE_IMPORT_SERVING_EVERY_S", "0.5"))
    line, during = await run(messages, every, tmp_path)
    print(line)
    assert line.endswith("both finished") and during, line
