"""Running the real `confide` command as a subprocess, the way a person would."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.peers import serve_ready as serve_ready  # re-exported: what the tests import from here
from tests.mailservers import free_port

if TYPE_CHECKING:
    from tests.fakes.bot_api import FakeTelegram
    from tests.fakes.openai_server import FakeOpenAI

CONFIDE = [sys.executable, "-m", "bridge.launch"]  # as the `confide` executable starts


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def cli_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")}
    env.update({"CONFIDE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", "COLUMNS": "250"})
    # The relevance gate off unless a test sets it: most tests check what reaches the model server.
    env["CONFIDE_RETRIEVAL__MIN_RELEVANCE"] = "0"
    env["CONFIDE_MODEL_WAIT_S"] = "0"  # a model that is down gives the fallback at once, unless a test waits
    env.update({f"CONFIDE_{k.upper()}": v for k, v in settings.items()})
    return env


async def run_cli(args: list[str], env: dict[str, str], stdin: str = "", limit_s: float = 180) -> Result:
    process = await asyncio.create_subprocess_exec(
        *CONFIDE, *args, env=env, cwd=env["CONFIDE_DATA_DIR"],
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), limit_s)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def start_serve(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """`confide serve` as a service manager runs it, its output appended to `log` (restarts share one log)."""
    return await asyncio.create_subprocess_exec(
        *CONFIDE, "serve", env=env, cwd=env["CONFIDE_DATA_DIR"], stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT
    )


async def kill_if_running(process: asyncio.subprocess.Process) -> None:
    """After a test, whatever happened: no `confide serve` is left behind."""
    if process.returncode is None:
        process.kill()
        await process.wait()


def telegram_serve_env(data_dir: Path, telegram: FakeTelegram, llm: FakeOpenAI, user: int) -> dict[str, str]:
    """`confide serve` with the Telegram adapter against the Bot API server of the tests (polling, no drafts),
    the tests' model server, and one person, Ana, at Telegram account `user`."""
    persons = [{"id": "ana", "name": "Ana", "accounts": [f"telegram:{user}"]}]
    models = {"main": {"base_url": llm.base_url, "model": llm.model}}
    return cli_env(data_dir, persons=json.dumps(persons), models=json.dumps(models), metrics__port=str(free_port()),
                   telegram__enabled="true", telegram__token=telegram.token, telegram__api_base_url=telegram.base_url,
                   telegram__poll_timeout_s="1", telegram__drafts="false")  # fmt: skip


def bot_replies(telegram: FakeTelegram, user: int) -> list[str]:
    """What the bot sent to a user's chat on the tests' Telegram, in order."""
    return [m.text for m in telegram.bot_messages(user)]
