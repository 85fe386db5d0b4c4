"""Operating Confide without stopping it: `confide import`, `export` and `forget` while `confide serve` runs on the
embedded index, handed to it over its local socket; the answers meanwhile use what was imported."""

from __future__ import annotations

import asyncio
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cli_helpers import kill_if_running, run_cli, start_serve, telegram_serve_env
from tests.fakes.bot_api import FakeTelegram
from tests.fakes.openai_server import FakeOpenAI, retrieved_history
from tests.helpers import eventually

USER = 100


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = await FakeTelegram().start()
    yield server
    await server.stop()


async def test_import_export_and_forget_go_through_the_running_process(
    tmp_path: Path, telegram: FakeTelegram, fake_llm: FakeOpenAI
) -> None:
    env = telegram_serve_env(tmp_path, telegram, fake_llm, USER)
    note = tmp_path / "cabin.md"
    note.write_text("# Cabin\nThe wifi password at the cabin is pine-cone-1987.\n")
    log = tmp_path / "serve.log"
    process = await start_serve(env, log)
    try:
        assert (await run_cli(["health", "--wait", "60"], env)).code == 0, log.read_text()[-3000:]
        alive = await run_cli(["health", "--live"], env)  # Kubernetes' liveness probe (deploy/helm)
        assert alive.code == 0 and alive.stdout.strip() == "alive"
        socket_file = tmp_path / "confide.sock"
        assert stat.S_IMODE(socket_file.stat().st_mode) == 0o600
        imported = await run_cli(["import", "files", str(note), "--person", "ana"], env)
        telegram.push_message(USER, "What is the wifi password at the cabin?")
        await eventually(lambda: telegram.bot_messages(USER), within_s=30)
        exported = await run_cli(["export", "--person", "ana"], env)
        forgotten = await run_cli(["forget", "--person", "ana", "--source", f"file:{note.resolve()}", "--yes"], env)
        after = await run_cli(["export", "--person", "ana"], env)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        await kill_if_running(process)
    assert imported.code == 0 and "Imported 1" in imported.stderr, imported.stderr
    assert "Confide is running: it does this job itself" in imported.stderr
    assert "pine-cone-1987" in retrieved_history(fake_llm.requests[-1]), "the answer did not use the import"
    assert exported.code == 0 and "pine-cone-1987" in exported.stdout, exported.stderr
    assert forgotten.code == 0 and "Deleted 1 record(s)" in forgotten.stderr, forgotten.stderr
    assert after.code == 0 and "pine-cone-1987" not in after.stdout
    assert not socket_file.exists(), "the socket outlived the process"
    # Nothing runs now: the CLI opens the index itself, as before.
    alone = await run_cli(["export", "--person", "ana"], env)
    assert alone.code == 0 and "Confide is running" not in alone.stderr, alone.stderr
