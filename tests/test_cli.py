"""The `confide` command end to end, as subprocesses: import, chat, crash and restart, doctor, bad settings."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from bridge.models.local_model import smollm2_gguf
from tests.cli_helpers import CONFIDE, cli_env, run_cli
from tests.fakes.openai_server import Behaviour, FakeOpenAI

NOTES = """# Household

The plumber, Mr. Okafor, fixed the boiler on 12 March; his number is 0176 5550 1234.

The wifi password at the cabin is blue-otter-42.
"""


async def test_import_then_chat_with_the_embedded_model_cites_the_notes(tmp_path: Path) -> None:
    """The fresh-install story: a new data directory, the packaged embedder, the real llama.cpp server with
    SmolLM2 and the relevance gate as shipped. Asked first with an empty history, Confide says it found
    nothing; after the notes are imported the same question is answered from them, citing the note, never
    Confide's own earlier words."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "house.md").write_text(NOTES)
    os.utime(tmp_path / "notes" / "house.md", (1_700_000_000, 1_700_000_000))  # the same excerpt header every run
    env = cli_env(tmp_path / "data")
    del env["CONFIDE_RETRIEVAL__MIN_RELEVANCE"]  # the default threshold, as on a fresh install
    env["CONFIDE_LOCAL_MODEL__GGUF_PATH"] = str(smollm2_gguf())  # the small model: the default 1.5B is slow here
    (tmp_path / "data").mkdir()
    question = "What is the wifi password at the cabin?\n"

    empty = await run_cli(["chat"], env, stdin=question)
    assert empty.code == 0, empty.stderr
    assert "I found nothing in your history about “wifi password cabin”" in empty.stdout, empty.stdout
    assert "Sources:" not in empty.stdout

    imported = await run_cli(["import", "files", str(tmp_path / "notes"), "--person", "me"], env)
    assert imported.code == 0, imported.stderr
    assert "Imported 1" in imported.stderr

    chat = await run_cli(["chat"], env, stdin=question)
    assert chat.code == 0, chat.stderr
    assert chat.stdout.count("confide> ") == 1
    answer, _, sources = chat.stdout.partition("Sources:")
    assert "model unavailable" not in answer.lower()
    assert "house.md" in sources and "Confide chat" not in sources, chat.stdout
    assert "blue-otter-42" in answer, chat.stdout  # SmolLM2 at temperature 0 reads it off the excerpt


async def test_crash_between_inbox_and_reply_is_answered_exactly_once(tmp_path: Path) -> None:
    llm = await FakeOpenAI().start()
    llm.script = [Behaviour(delay_s=60)]  # the first answer hangs: the process is killed while waiting
    models = json.dumps({"main": {"base_url": llm.base_url, "model": llm.model, "retries": 0}})
    env = cli_env(tmp_path, models=models)
    question = "When did the plumber fix the boiler?"

    first = await asyncio.create_subprocess_exec(
        *CONFIDE, "chat", env=env, cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert first.stdin is not None
    first.stdin.write(f"{question}\n".encode())
    await first.stdin.drain()
    await asyncio.wait_for(llm.started.wait(), 60)
    first.kill()
    out, _ = await first.communicate()
    assert "confide>" not in out.decode()

    second = await run_cli(["chat"], env)  # stdin closed at once: it only finishes what was left
    third = await run_cli(["chat"], env)
    await llm.stop()
    assert second.code == 0, second.stderr
    assert second.stdout.count(f"You asked: {question}") == 1
    assert third.stdout.count("confide>") == 0, "the answer was sent twice"
    assert len(llm.requests) == 2


async def test_invalid_setting_stops_startup_naming_it(tmp_path: Path) -> None:
    result = await run_cli(["chat"], cli_env(tmp_path, recent_turns="many"))
    assert result.code == 2
    assert "CONFIDE_RECENT_TURNS" in result.stderr and "integer" in result.stderr
    result = await run_cli(["chat"], cli_env(tmp_path, store__backend="server"))
    assert result.code == 2
    assert "CONFIDE_STORE" in result.stderr and "url is required" in result.stderr


async def test_public_model_endpoint_is_refused_unless_allowed(tmp_path: Path) -> None:
    models = json.dumps({"cloud": {"base_url": "http://203.0.113.7:8000/v1", "model": "x"}})
    refused = await run_cli(["chat"], cli_env(tmp_path, models=models))
    assert refused.code == 2
    assert "Refusing to start" in refused.stderr and "203.0.113.7" in refused.stderr
    doctor = await run_cli(["doctor"], cli_env(tmp_path, models=models))
    assert doctor.code == 1
    assert "resolves to public address 203.0.113.7" in doctor.stdout
    assert "not contacted" in doctor.stdout


async def test_doctor_lists_hosts_and_checks_them(tmp_path: Path) -> None:
    llm = await FakeOpenAI().start()
    models = json.dumps({"main": {"base_url": llm.base_url, "model": llm.model}})
    healthy = await run_cli(["doctor"], cli_env(tmp_path, models=models))
    await llm.stop()
    assert healthy.code == 0, healthy.stdout + healthy.stderr
    assert llm.base_url in healthy.stdout and "loopback" in healthy.stdout
    assert "serves test-model" in healthy.stdout
    assert "all-MiniLM-L6-v2 + multilingual-USE-v3, dimension 896" in healthy.stdout  # the packaged pair
    down = await run_cli(["doctor"], cli_env(tmp_path, models=models))
    assert down.code == 1 and "failed" in down.stdout


async def test_doctor_asks_every_replica_what_it_serves(tmp_path: Path) -> None:
    right, wrong = await FakeOpenAI().start(), await FakeOpenAI(model="other-model").start()
    models = json.dumps({"main": {"base_url": right.base_url, "replicas": [wrong.base_url], "model": right.model}})
    report = await run_cli(["doctor"], cli_env(tmp_path, models=models))
    wrong.model = right.model
    mended = await run_cli(["doctor"], cli_env(tmp_path, models=models))
    await right.stop()
    await wrong.stop()
    assert report.code == 1 and right.base_url in report.stdout and wrong.base_url in report.stdout
    assert f"{wrong.base_url} serves ['other-model'], not 'test-model'" in report.stdout
    assert mended.code == 0 and "serves test-model on 2 replicas" in mended.stdout, mended.stdout


async def test_forget_and_export_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Alpha note about the garden shed.")
    (tmp_path / "b.txt").write_text("Beta note about the car insurance.")
    env = cli_env(tmp_path / "data")
    (tmp_path / "data").mkdir()
    assert (await run_cli(["import", "files", str(tmp_path), "--person", "me"], env)).code == 0
    again = await run_cli(["import", "files", str(tmp_path), "--person", "me"], env)
    exported = await run_cli(["export", "--person", "me"], env)
    assert len(exported.stdout.splitlines()) == 2, "importing twice must add nothing"
    source = next(json.loads(line)["source"] for line in exported.stdout.splitlines() if "Alpha" in line)
    assert again.code == 0
    gone = await run_cli(["forget", "--person", "me", "--source", source, "--yes"], env)
    assert gone.code == 0 and "Deleted 1" in gone.stderr
    left = await run_cli(["export", "--person", "me"], env)
    assert [json.loads(line)["text"] for line in left.stdout.splitlines()] == ["Beta note about the car insurance."]
    unknown = await run_cli(["export", "--person", "mallory"], env)
    assert unknown.code == 2 and "No person 'mallory'" in unknown.stderr


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it ended while we looked
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_the_embedded_model_server_dies_with_confide_even_when_it_is_killed(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer, a crash) gives Confide no chance to stop its llama.cpp server: the server must
    end by itself, or every restart leaves one more behind."""
    env = cli_env(tmp_path)
    env["CONFIDE_LOCAL_MODEL__GGUF_PATH"] = str(smollm2_gguf())
    confide = await asyncio.create_subprocess_exec(
        *CONFIDE, "chat", env=env, cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        server: list[int] = []
        for _ in range(600):  # the server is started while Confide assembles
            server = children(confide.pid)
            if server and "bridge.models.local_model" in cmdline(server[0]):
                break
            await asyncio.sleep(0.1)
        assert server, "no model server was started"
        confide.kill()
        await confide.wait()
        for _ in range(150):
            if not alive(server[0]):
                break
            await asyncio.sleep(0.1)
        assert not alive(server[0]), "the model server outlived Confide"
    finally:
        if confide.returncode is None:
            confide.kill()
            await confide.wait()
