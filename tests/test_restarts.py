"""Restarts give up on no message that never crashed anything: `confide serve` killed (SIGKILL) again and again
while 20 people wait for a slow model that takes one question at a time; every one of them gets one real answer.

Before, a message counted a start each time it was taken from the inbox, and every waiting chat is taken at each
start: after ten restarts, people whose question had never reached the model got "Sorry, I could not process your
message (RuntimeError)"."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cli_helpers import bot_replies, cli_env, kill_if_running, serve_ready, start_serve
from tests.fakes.bot_api import FakeTelegram
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.helpers import eventually
from tests.mailservers import free_port

PEOPLE = [200 + n for n in range(20)]
KILLS = 12  # more than bridge.dispatch.dispatcher.MAX_STARTS


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def serve_env(tmp_path: Path, telegram: FakeTelegram, llm: FakeOpenAI) -> dict[str, str]:
    persons = [{"id": "ana", "name": "Ana", "accounts": [f"telegram:{user}" for user in PEOPLE]}]
    models = {"main": {"base_url": llm.base_url, "model": llm.model, "concurrency": 1, "timeout_s": 60}}
    return cli_env(
        tmp_path, persons=json.dumps(persons), models=json.dumps(models), metrics__port=str(free_port()),
        telegram__enabled="true", telegram__token=telegram.token, telegram__api_base_url=telegram.base_url,
        telegram__poll_timeout_s="1", telegram__drafts="false", log_level="INFO",
    )  # fmt: skip


async def test_repeated_sigkill_with_a_slow_model_gives_every_question_one_real_answer(
    tmp_path: Path, telegram: FakeTelegram, fake_llm: FakeOpenAI
) -> None:
    fake_llm.default = Behaviour(delay_s=1.5)  # one question at a time, 1.5 s each: most of them wait
    env, log = serve_env(tmp_path, telegram, fake_llm), tmp_path / "serve.log"
    for user in PEOPLE:
        telegram.push_message(user, f"where did person {user} leave the key?")
    for _ in range(KILLS):
        process = await start_serve(env, log)
        try:
            await eventually(lambda: serve_ready(env), within_s=60)
            await asyncio.sleep(2)
            process.send_signal(signal.SIGKILL)
            await process.wait()
        finally:
            await kill_if_running(process)
    waited = [user for user in PEOPLE if not any(text.startswith("You asked") for text in bot_replies(telegram, user))]
    assert waited, "every question was answered before the kills ended: the test would prove nothing"

    process = await start_serve(env, log)
    try:
        await eventually(lambda: all(bot_replies(telegram, user) for user in PEOPLE), within_s=120)
        await asyncio.sleep(1)  # a duplicate would come right after
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        await kill_if_running(process)
    output = log.read_text()
    for user in PEOPLE:
        sent = bot_replies(telegram, user)
        assert len(sent) == 1, (user, sent)
        assert sent[0].startswith(f"You asked: where did person {user} leave the key?"), (user, sent, output[-3000:])
    assert "giving up" not in output
