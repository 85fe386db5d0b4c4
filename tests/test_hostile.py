"""Another local user of the machine as the attacker (issue 20): what Confide keeps on disk is its owner's alone, a
data directory others can read is refused, its metrics answer only to a token when one is set, and a stop at any
moment of start-up is a clean stop. Mail (tests/test_hostile_mail.py) and the model server
(tests/test_local_model_owned.py) have their own files.

Before: the data directory was created 0755 and its files 0644 under the usual umask 022, and another user read a
person's therapy notes out of the Qdrant WAL and `state.sqlite3-wal`; a SIGTERM in the first 0.15 s of
`confide serve` exited 143."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.ops.metrics import Metrics
from tests.cli_helpers import CONFIDE, cli_env, run_cli
from tests.fakes.openai_server import FakeOpenAI
from tests.mailservers import free_port
from tests.other_user import OtherUser

SECRET = "Therapy notes: diagnosis code F41.1, PIN 3344."


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A folder every user may enter, as a home directory often is (pytest's own tmp folders are 0700, which
    would keep the other user out whatever Confide did)."""
    parent = Path(tempfile.mkdtemp(prefix="confide-hostile-", dir="/tmp"))
    parent.chmod(0o755)
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


def with_umask(env: dict[str, str], umask: str) -> list[str]:
    """The CLI started from a shell whose umask is `umask` (the usual 022, not the tests' own 077)."""
    return ["sh", "-c", f'umask {umask} && exec "$@"', "confide", *CONFIDE]


async def run_with_umask(args: list[str], env: dict[str, str], stdin: str = "", umask: str = "022") -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *with_umask(env, umask), *args, env=env, cwd="/",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 180)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


def models(llm: FakeOpenAI) -> str:
    return json.dumps({"main": {"base_url": llm.base_url, "model": llm.model}})


async def test_another_user_reads_nothing_of_the_data_directory_whatever_the_umask(
    open_parent: Path, fake_llm: FakeOpenAI, other_user: OtherUser
) -> None:
    notes, data = open_parent / "notes", open_parent / "data"
    notes.mkdir(mode=0o755)
    (notes / "therapy.md").write_text(SECRET)
    (notes / "therapy.md").chmod(0o600)  # the person's own file; what Confide makes of it is the question
    env = cli_env(data, models=models(fake_llm))
    code, output = await run_with_umask(["import", "files", str(notes), "--person", "me"], env)
    assert code == 0, output
    code, output = await run_with_umask(["chat"], env, stdin="What is my PIN?\n/usage\n")
    assert code == 0 and "You asked" in output, output

    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    written = [p for p in data.rglob("*") if not p.is_symlink()]
    assert any(p.name == "state.sqlite3" for p in written) and any("wal" in p.parts for p in written), written
    loose = [f"{p} {stat.S_IMODE(p.stat().st_mode):04o}" for p in written if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert loose == [], "files or folders others may read or enter"

    # As the other user: not even the names of the files, and no byte of the note anywhere under the data directory.
    looked = other_user.popen("-c", LOOK, str(data), SECRET.split(":")[1].strip()[:20])
    out, err = looked.communicate(timeout=60)
    found = json.loads(out)
    assert found == {"listed": "Permission denied", "read": 0, "found": False}, (found, err)


# Run as the other user: list the data directory, then try every file Confide wrote (named by root's listing
# passed on stdin would leak nothing new; the walk is done as that user, so it sees what that user can see).
LOOK = r"""
import json, os, sys
root, needle = sys.argv[1], sys.argv[2].encode()
try:
    os.listdir(root)
    listed = "listed"
except PermissionError as exc:
    listed = exc.strerror
read, found = 0, False
for folder, _, files in os.walk(root):
    for name in files:
        try:
            with open(os.path.join(folder, name), "rb") as handle:
                found = found or needle in handle.read()
                read += 1
        except OSError:
            pass
print(json.dumps({"listed": listed, "read": read, "found": found}))
"""


async def test_a_data_directory_others_can_read_is_refused_with_the_chmod_to_run(
    open_parent: Path, fake_llm: FakeOpenAI
) -> None:
    data = open_parent / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    env = cli_env(data, models=models(fake_llm))
    code, output = await run_with_umask(["chat"], env, stdin="hello\n")
    assert code == 2, output
    assert f"chmod -R go-rwx {data}" in output and "can be read by other users" in output, output
    assert list(data.iterdir()) == [], "something was written into the refused directory"

    os.chmod(data, 0o700)  # as the message says
    code, output = await run_with_umask(["chat"], env, stdin="hello\n")
    assert code == 0 and "You asked: hello" in output, output


async def test_metrics_and_health_answer_only_with_the_token_when_one_is_set(tmp_path: Path) -> None:
    metrics, port, token = Metrics(), free_port(), "s3cret-token"
    metrics.ready = True
    metrics.serve(port, token)
    try:
        async with httpx.AsyncClient(trust_env=False, base_url=f"http://127.0.0.1:{port}") as client:
            for path in ("/metrics", "/healthz", "/readyz"):
                assert (await client.get(path)).status_code == 401
                wrong = await client.get(path, headers={"Authorization": "Bearer guess"})
                assert wrong.status_code == 401
                right = await client.get(path, headers={"Authorization": f"Bearer {token}"})
                assert right.status_code == 200, path
        env = cli_env(tmp_path, metrics__port=str(port))
        without = await run_cli(["health"], env)
        assert without.code == 1 and "bearer token is required" in without.stderr, without.stderr
        env["CONFIDE_METRICS__TOKEN"] = token
        ready = await run_cli(["health"], env)
        assert (ready.code, ready.stdout.strip()) == (0, "ready"), ready.stderr
    finally:
        metrics.stop()


@pytest.mark.parametrize("after_s", [0.05, 0.08, 0.12, 0.15, 0.25, 0.5])
async def test_a_stop_early_in_start_up_is_a_clean_stop(tmp_path: Path, after_s: float) -> None:
    """SIGTERM from the first instants of `confide serve` (before, the handlers came after the CLI's imports: the
    first ~0.15 s exited 143). Only the interpreter's own start, before any of Confide's code runs (about 20 ms
    here), still has the default action."""
    unreachable = "http://127.0.0.1:9"
    env = cli_env(tmp_path, models=json.dumps({"m": {"base_url": f"{unreachable}/v1", "model": "m"}}),
                  telegram__enabled="true", telegram__token="1:x", telegram__api_base_url=unreachable)  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *CONFIDE, "serve", env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    await asyncio.sleep(after_s)
    process.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()[-2000:]
    assert b"Traceback" not in out
