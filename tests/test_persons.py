"""Persons in the state store: `confide persons add|remove|list|show` as subprocesses, on SQLite and PostgreSQL, and
a running bridge that follows them within seconds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.history.index import HistoryIndex
from tests.cli_helpers import cli_env, run_cli
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import Harness
from tests.helpers import eventually, model_for

SEEDED = json.dumps([{"id": "me", "name": "Me", "accounts": ["console:me"]}])


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    state = {"state_url": request.getfixturevalue("state_url")} if request.param == "postgresql" else {}
    return cli_env(tmp_path, persons=SEEDED, **state)


async def test_persons_are_added_listed_shown_changed_and_removed(env: dict[str, str]) -> None:
    added = await run_cli(["persons", "add", "ana", "-a", "telegram:555", "-a", "email:Ana@Example.org",
                           "--name", "Ana Rossi", "--language", "it", "--time-zone", "Europe/Rome"], env)  # fmt: skip
    assert added.code == 0 and "Added ana (telegram:555, email:ana@example.org)" in added.stderr, added.stderr
    taken = await run_cli(["persons", "add", "bob", "-a", "email:ana@example.org"], env)
    assert taken.code == 2 and "email:ana@example.org already belongs to 'ana'" in taken.stderr
    unknown_zone = await run_cli(["persons", "add", "bob", "-a", "telegram:7", "--time-zone", "Mars/Base"], env)
    assert unknown_zone.code == 2 and "unknown time zone 'Mars/Base'" in unknown_zone.stderr
    listed = await run_cli(["persons", "list"], env)
    rows = [line.split("│") for line in listed.stdout.splitlines() if line.startswith("│")]
    assert [row[1].strip() for row in rows if row[1].strip()] == ["ana", "me"]
    assert "email:ana@example.org" in listed.stdout and "Europe/Rome" in listed.stdout
    shown = await run_cli(["persons", "show", "ana"], env)
    assert shown.code == 0 and "Europe/Rome" in shown.stdout and "history    0 record(s)" in shown.stdout
    changed = await run_cli(["persons", "add", "ana", "-a", "telegram:556"], env)
    assert changed.code == 0 and changed.stderr.startswith("Changed ana")
    undecided = await run_cli(["persons", "remove", "ana"], env, stdin="")
    assert undecided.code == 2 and "Nobody was removed" in undecided.stderr
    removed = await run_cli(["persons", "remove", "ana"], env, stdin="perhaps\nkeep\n")
    assert removed.code == 0 and "Removed ana: no longer answered. Their history was kept" in removed.stderr
    again = await run_cli(["persons", "remove", "ana", "--history", "keep"], env)
    assert again.code == 1 and "No person 'ana'" in again.stderr
    # The environment seeds persons the store never knew; one removed here stays removed.
    env_with_ana = {**env, "CONFIDE_PERSONS": json.dumps([{"id": "ana", "accounts": ["telegram:555"]}])}
    after = await run_cli(["persons", "list"], env_with_ana)
    assert " ana " not in after.stdout and " me " in after.stdout


async def test_removing_a_person_can_delete_their_history(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("The spare key of the cabin is under the blue flower pot.")
    env = cli_env(tmp_path / "data", persons=json.dumps([{"id": "ana", "accounts": ["telegram:1"]},
                                                         {"id": "me", "accounts": ["console:me"]}]))  # fmt: skip
    (tmp_path / "data").mkdir()
    assert (await run_cli(["import", "files", str(tmp_path / "notes"), "--person", "ana"], env)).code == 0
    removed = await run_cli(["persons", "remove", "ana", "--history", "delete"], env)
    assert removed.code == 0 and "Their history was deleted (1 record(s))" in removed.stderr, removed.stderr
    assert (await run_cli(["export", "--person", "ana"], env)).stdout == ""
    refused = await run_cli(["import", "files", str(tmp_path / "notes"), "--person", "ana"], env)
    assert refused.code == 2 and "No person 'ana'" in refused.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_running_bridge_answers_a_person_added_while_it_runs_and_stops_with_one_removed(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    history: HistoryIndex,
    fake_llm: FakeOpenAI,
    harness_factory: Callable[..., Harness],
) -> None:
    state = {"state_url": request.getfixturevalue("state_url")} if backend == "postgresql" else {}
    env = cli_env(tmp_path, **{k: v for k, v in state.items()})
    async with harness_factory({"main": model_for(fake_llm)}, **state) as h:
        await h.adapter.send("777", "who are you?")  # a stranger: no answer
        await asyncio.sleep(1.0)
        assert h.adapter.delivered == []
        added = await run_cli(["persons", "add", "carla", "-a", "telegram:777", "--name", "Carla"], env)
        assert added.code == 0, added.stderr
        started = asyncio.get_running_loop().time()
        await eventually(lambda: h.directory.person_for("telegram:777") == "carla", within_s=10)
        followed_s = asyncio.get_running_loop().time() - started
        await h.adapter.send("777", "where is the spare key?")
        await eventually(lambda: h.adapter.delivered, within_s=20)
        assert "where is the spare key" in h.adapter.delivered[0].text
        removed = await run_cli(["persons", "remove", "carla", "--history", "keep"], env)
        assert removed.code == 0, removed.stderr
        await eventually(lambda: h.directory.person_for("telegram:777") is None, within_s=10)
        await h.adapter.send("777", "still there?")
        await asyncio.sleep(1.0)
    assert len(h.adapter.delivered) == 1, "a removed person was answered"
    assert followed_s < 10
