"""Stopping `confide serve` as systemd, docker and compose do (SIGTERM), and as an impatient operator does (twice):
the real command as a subprocess, the Bot API server of the tests, a model that answers slowly."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.cli_helpers import cli_env, kill_if_running, run_cli, start_serve
from tests.fakes.bot_api import FakeTelegram
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.helpers import eventually
from tests.mailservers import free_port

USER = 100


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def serve_env(tmp_path: Path, telegram: FakeTelegram, llm: FakeOpenAI, grace_s: float = 20) -> dict[str, str]:
    persons = [{"id": "ana", "name": "Ana", "accounts": [f"telegram:{USER}"]}]
    models = {"main": {"base_url": llm.base_url, "model": llm.model, "timeout_s": 60}}
    return cli_env(
        tmp_path, persons=json.dumps(persons), models=json.dumps(models), shutdown_grace_s=str(grace_s),
        metrics__port=str(free_port()),
        telegram__enabled="true", telegram__token=telegram.token, telegram__api_base_url=telegram.base_url,
        telegram__poll_timeout_s="1", telegram__drafts="false", log_level="INFO",
    )  # fmt: skip


async def probe(env: dict[str, str], path: str) -> int:
    async with httpx.AsyncClient(trust_env=False) as client:
        return (await client.get(f"http://127.0.0.1:{env['CONFIDE_METRICS__PORT']}{path}")).status_code


def answers(telegram: FakeTelegram, question: str) -> list[str]:
    """The final text of each bot message that answers `question`."""
    return [m.text for m in telegram.bot_messages(USER) if m.text.startswith(f"You asked: {question}")]


def finished(telegram: FakeTelegram, question: str) -> bool:
    return any(complete(text, question) for text in answers(telegram, question))


def complete(text: str, question: str) -> bool:
    """The whole answer: cited, or (nothing in the history to cite) the whole question echoed."""
    return text.endswith("[1]") or "Sources:" in text or text.rstrip() == f"You asked: {question}"


async def test_sigterm_lets_the_answer_in_flight_finish_and_exits_0(
    tmp_path: Path, telegram: FakeTelegram, fake_llm: FakeOpenAI
) -> None:
    fake_llm.default = Behaviour(chunk_delay_s=0.4)  # an answer takes a few seconds
    env, log = serve_env(tmp_path, telegram, fake_llm), tmp_path / "serve.log"
    process = await start_serve(env, log)
    try:
        telegram.push_message(USER, "where is the spare key?")
        await eventually(lambda: fake_llm.requests, within_s=60)
        ready = await run_cli(["health"], env)
        health = await probe(env, "/healthz")
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
        took = time.monotonic() - stopped_at
    finally:
        await kill_if_running(process)
    assert (ready.code, ready.stdout.strip(), health) == (0, "ready", 200), ready.stderr
    gone = await run_cli(["health"], env)
    assert gone.code == 1 and "not reachable" in gone.stderr, "a stopped Confide was reported ready"
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert took < 20, f"the stop took {took:.1f} s, more than the grace period"
    assert finished(telegram, "where is the spare key?"), telegram.bot_messages(USER)
    assert "stopping (answers in flight may finish" in output and "1 chat(s) finished their answer, 0 cut off" in output
    assert "Traceback" not in output, output[-3000:]

    # A message that came while it was down is answered after the next start, once; the first is not repeated.
    telegram.push_message(USER, "and the boat key?")
    process = await start_serve(env, log)
    try:
        await eventually(lambda: finished(telegram, "and the boat key?"), within_s=60)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        await kill_if_running(process)
    assert len(answers(telegram, "where is the spare key?")) == 1
    assert len(answers(telegram, "and the boat key?")) == 1
    assert len(fake_llm.requests) == 2, "an answer that was finished before the stop was asked for again"


async def test_a_second_signal_stops_at_once_and_the_cut_answer_comes_after_the_start(
    tmp_path: Path, telegram: FakeTelegram, fake_llm: FakeOpenAI
) -> None:
    fake_llm.script = [Behaviour(chunk_delay_s=3.0)]  # the first answer would take far longer than the test waits
    env, log = serve_env(tmp_path, telegram, fake_llm), tmp_path / "serve.log"
    process = await start_serve(env, log)
    try:
        telegram.push_message(USER, "where is the spare key?")
        await eventually(lambda: fake_llm.requests, within_s=60)
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 30)
        took = time.monotonic() - stopped_at
    finally:
        await kill_if_running(process)
    assert code == 0 and took < 8, (code, took, log.read_text()[-3000:])
    assert "SIGINT again: stopping now" in log.read_text()
    assert not finished(telegram, "where is the spare key?")

    process = await start_serve(env, log)
    try:
        await eventually(lambda: finished(telegram, "where is the spare key?"), within_s=60)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        await kill_if_running(process)
    assert [t for t in answers(telegram, "where is the spare key?") if complete(t, "where is the spare key?")]
    assert len(answers(telegram, "where is the spare key?")) == 1, "the cut answer was sent twice"
    assert "Sorry, I could not answer" not in log.read_text()
