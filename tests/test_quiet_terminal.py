"""`confide chat` shows the conversation only (issue 21): its log goes to DATA_DIR/logs/confide.log, or to stderr with
-v. Before, INFO lines ("starting local model server ...", "embedding with ...", "nothing relevant in the history
(best 0.396 < 0.468)") stood between a newcomer's question and the answer."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.cli_helpers import cli_env, run_cli
from tests.fakes.openai_server import Behaviour, FakeOpenAI

LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR)")


async def test_chat_on_a_fresh_data_directory_prints_the_conversation_only(
    tmp_path: Path, fake_llm: FakeOpenAI
) -> None:
    data = tmp_path / "data"
    env = cli_env(data, models=json.dumps({"main": {"base_url": fake_llm.base_url, "model": fake_llm.model}}))
    env["CONFIDE_LOG_LEVEL"] = "DEBUG"  # even so
    data.mkdir()
    result = await run_cli(["chat"], env, stdin="Where is the spare key?\n")
    assert result.code == 0, result.stderr
    assert result.stderr == "", result.stderr
    shown = [line for line in result.stdout.splitlines() if line.strip()]
    assert shown == ["confide> You asked: Where is the spare key?"]  # a fresh history: nothing to cite
    logged = (data / "logs" / "confide.log").read_text()
    assert "embedding with" in logged and LOG_LINE.search(logged)

    verbose = await run_cli(["chat", "-v"], env, stdin="And the boat key?\n")
    assert verbose.code == 0 and LOG_LINE.search(verbose.stderr), verbose.stderr
    assert not LOG_LINE.search(verbose.stdout)


async def test_an_error_is_said_once_in_words(tmp_path: Path, fake_llm: FakeOpenAI) -> None:
    fake_llm.default = Behaviour(status=500)  # the model is down for every request
    data = tmp_path / "data"
    models = {"main": {"base_url": fake_llm.base_url, "model": fake_llm.model, "retries": 3}}
    env = cli_env(data, models=json.dumps(models))
    data.mkdir()
    result = await run_cli(["chat"], env, stdin="Where is the spare key?\n")
    assert result.code == 0, result.stderr
    assert not LOG_LINE.search(result.stderr) and not LOG_LINE.search(result.stdout), result.stderr
    said = [line for line in result.stderr.splitlines() if line.strip()]
    assert said and len(said) == len(set(said)), said
    assert all("details in" in line for line in said), said


async def test_an_import_shows_its_progress_and_summary_and_no_log_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    note = tmp_path / "cabin.txt"
    note.write_text("The wifi password at the cabin is pine-cone-1987.\n")
    env = cli_env(data)
    env["CONFIDE_LOG_LEVEL"] = "DEBUG"
    result = await run_cli(["import", "files", str(note), "--person", "me"], env)
    assert result.code == 0, result.stderr
    assert not LOG_LINE.search(result.stdout + result.stderr), result.stdout + result.stderr
    assert "Imported 1, already there 0" in result.stderr  # the bar and the summary: on stderr, as rich puts them
    assert "imported files cabin.txt into me's history" in (data / "logs" / "confide.log").read_text()

    verbose = await run_cli(["import", "-v", "files", str(note), "--person", "me"], env)
    assert verbose.code == 0 and LOG_LINE.search(verbose.stderr), verbose.stderr
    assert "Imported 0, already there 1" in verbose.stderr
