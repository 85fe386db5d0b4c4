"""Every file Confide writes, cut short, gives a plain message and exit 2 (naming what to repair or rebuild), or
still works: never a traceback, never a death by signal, and a damage that still works still answers.

An audit cut `qdrant/confide-index.json` and `qdrant/edge_config.json` by 7 bytes: `confide serve` and `export`
exited 1 with a JSONDecodeError and "Service runtime error: IO Error: Failed to deserialize"."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.cli_helpers import cli_env, run_cli
from tests.fakes.openai_server import FakeOpenAI

NOTE = "The spare key of the cabin is under the blue flower pot.\n"
QUESTION = "Where is the spare key of the cabin?\n"
SKIPPED = {"confide.lock"}  # a lock file's content is only the pid of its holder, rewritten at each start
CUT = 7


@pytest.fixture
async def data_dir(tmp_path: Path, fake_llm: FakeOpenAI) -> Path:
    """A data directory as Confide leaves it: a note imported, a question asked and answered."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "cabin.md").write_text(NOTE)
    (tmp_path / "data").mkdir()  # the commands run in it
    env = environment(tmp_path / "data", fake_llm)
    imported = await run_cli(["import", "files", str(tmp_path / "notes"), "--person", "me"], env)
    assert imported.code == 0, imported.stderr
    asked = await run_cli(["chat"], env, stdin=QUESTION)
    assert asked.code == 0 and "You asked" in asked.stdout, asked.stderr
    return tmp_path / "data"


def environment(data: Path, llm: FakeOpenAI) -> dict[str, str]:
    return cli_env(data, models=json.dumps({"main": {"base_url": llm.base_url, "model": llm.model}}))


def written_files(data: Path) -> list[Path]:
    """Every file, but of the index's segments one of each kind (a segment holds ~80 files of ~15 kinds, and all of
    one kind are read by the same code: a run for each took over 3 minutes)."""
    kinds: dict[str, Path] = {}
    for path in sorted(p.relative_to(data) for p in data.rglob("*") if p.is_file() and p.name not in SKIPPED):
        if "segments" in path.parts:  # "<hash>-person-map/bitmask.dat" and "<hash>-source-map/bitmask.dat": one kind
            kind = re.sub(r"^[0-9a-z]{24}-.*-(map|null|numeric)$", r"\1", path.parent.name) + "/" + path.name
        else:
            kind = str(path)
        kinds.setdefault(kind, path)
    return sorted(kinds.values())


async def test_every_file_cut_short_gives_a_plain_message_or_still_works(
    data_dir: Path, tmp_path: Path, fake_llm: FakeOpenAI
) -> None:
    files = written_files(data_dir)
    assert any(f.parts[0] == "qdrant" for f in files) and Path("state.sqlite3") in files, files
    outcomes: dict[str, str] = {}
    for index, relative in enumerate(files):
        copy = tmp_path / f"copy-{index}"
        shutil.copytree(data_dir, copy)
        damaged = copy / relative
        size = damaged.stat().st_size
        with damaged.open("r+b") as handle:
            handle.truncate(max(0, size - CUT))
        result = await run_cli(["chat"], environment(copy, fake_llm), stdin=QUESTION)
        where = f"{relative} cut from {size} to {max(0, size - CUT)} bytes"
        assert result.code in (0, 2), f"{where}: exit {result.code}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, f"{where}:\n{result.stderr[-3000:]}"
        if result.code == 2:
            assert str(copy) in result.stderr and ("mv " in result.stderr or "printf" in result.stderr), (
                f"{where}: the message names neither the file nor the repair:\n{result.stderr}"
            )
        else:
            assert "You asked" in result.stdout, f"{where}: no answer\n{result.stdout}\n{result.stderr[-2000:]}"
        outcomes[str(relative)] = "works" if result.code == 0 else "refused (exit 2)"
    print(json.dumps(outcomes, indent=1))  # what each damage does, for the curious reader of -s output
    assert outcomes["qdrant/confide-index.json"] == "refused (exit 2)"
    assert outcomes["qdrant/edge_config.json"] == "refused (exit 2)"


async def test_a_state_database_that_is_not_one_is_refused_with_the_repair(
    data_dir: Path, fake_llm: FakeOpenAI
) -> None:
    state = data_dir / "state.sqlite3"
    for leftover in ("state.sqlite3-wal", "state.sqlite3-shm"):
        (data_dir / leftover).unlink(missing_ok=True)
    state.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)  # a header and then garbage: an overwritten file
    result = await run_cli(["chat"], environment(data_dir, fake_llm), stdin=QUESTION)
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"the state database {state} is damaged" in result.stderr and f"mv {state} {state}.damaged" in result.stderr
    assert "the history itself is in the index and is not affected" in result.stderr
