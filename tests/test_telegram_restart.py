"""`confide serve` with Telegram as a real subprocess, killed (SIGKILL) mid-work and restarted.

Two things must survive the kill: a message already in the inbox whose answer was in progress is
answered exactly once after the restart, and an update the process had fetched but not yet stored
(its document download was still running) comes again, because its offset was never confirmed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.commands.handlers import HELP
from tests.cli_helpers import CONFIDE, cli_env
from tests.fakes.bot_api import FakeTelegram
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.helpers import eventually

PERSONS = [{"id": "alice", "accounts": ["telegram:100"]}, {"id": "bob", "accounts": ["telegram:200"]}]


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = await FakeTelegram().start()
    yield server
    await server.stop()


async def serve(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as stderr:
        return await asyncio.create_subprocess_exec(
            *CONFIDE, "serve", env=env, cwd=env["CONFIDE_DATA_DIR"],
            stdin=asyncio.subprocess.DEVNULL, stdout=stderr, stderr=stderr,
        )  # fmt: skip


async def test_killed_mid_work_every_update_is_answered_once_after_restart(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    llm = await FakeOpenAI().start()
    llm.script = [Behaviour(delay_s=20)]  # the first answer hangs: the process is killed while waiting for it
    models = json.dumps({"main": {"base_url": llm.base_url, "model": llm.model, "retries": 0}})
    env = cli_env(
        tmp_path, models=models, persons=json.dumps(PERSONS), telegram__enabled="true", telegram__token=telegram.token,
        telegram__api_base_url=telegram.base_url, telegram__poll_timeout_s="5", telegram__edit_interval_s="0.2",
    )  # fmt: skip
    log = tmp_path / "serve.log"
    question = telegram.push_message(100, "When did the plumber fix the boiler?")
    first = await serve(env, log)
    try:
        await asyncio.wait_for(llm.started.wait(), 90)  # stored, claimed, and its answer under way
        await eventually(lambda: telegram.confirmed == question["update_id"])
        telegram.hold_downloads = asyncio.Event()
        file_id = telegram.add_file("boiler.md", b"The plumber fixed the boiler on 12 March.\n")
        document = {"file_id": file_id, "file_unique_id": "u1", "file_name": "boiler.md", "mime_type": "text/markdown"}
        fetched = telegram.push_message(200, caption="what does this file say?", document=document)
        await asyncio.wait_for(telegram.download_started.wait(), 30)  # fetched by getUpdates, not yet stored
    finally:
        first.kill()
        await first.wait()
    assert telegram.confirmed == question["update_id"], "the update being downloaded was never confirmed"
    assert telegram.bot_messages(100) == [] and telegram.bot_messages(200) == []

    telegram.hold_downloads.set()
    second = await serve(env, log)
    try:
        await eventually(lambda: telegram.bot_messages(100) and telegram.bot_messages(200), within_s=90)
        telegram.push_message(100, "/help")  # answered after everything this chat had before it
        await eventually(lambda: len(telegram.bot_messages(100)) >= 2, within_s=30)
    finally:
        second.kill()
        await second.wait()
        await llm.stop()
    output = log.read_text()
    first, helped = (m.text for m in telegram.bot_messages(100))
    assert first.startswith("You asked: When did the plumber fix the boiler?") and helped == HELP, output
    [second] = (m.text for m in telegram.bot_messages(200))
    assert second.startswith("You asked: what does this file say?"), output
    assert telegram.confirmed > fetched["update_id"]
    assert len(llm.requests) == 3, "the hung answer again, and the re-fetched update once"
    saved = tmp_path / "attachments" / "telegram" / "200" / f"{fetched['message']['message_id']}-boiler.md"
    assert saved.read_bytes() == b"The plumber fixed the boiler on 12 March.\n"
    assert telegram.token.partition(":")[2] not in output
