"""Workers on one PostgreSQL inbox: messages per second with 1, 2 and 4 `confide serve --role worker` processes, and
the takeover when one of two is killed with SIGKILL under load. `SCALE_LOG_LEVEL=INFO` shows what each process did
(in the run's temporary folder).

Each run starts a private PostgreSQL (benchmarks/peers.py, a fresh database per measurement), the instant model of
benchmarks/stream_server.py (so what is measured is Confide's own work: retrieval over the packaged embedder,
prompt, stream, the finishing transaction), and N workers, each with its own data directory. The benchmark is the
gateway: it puts `--messages` messages of `--chats` chats into the inbox at once and times until every one is
finished. Printed (figures, not a test):

- msg/s per worker count, and the ratio to one worker, with the machine's cores (on 2 cores the ratio is bounded:
  every worker also embeds each question on the CPU);
- lost (messages never finished) and duplicated (messages with more than one reply queued), over every phase;
- takeover: 2 workers, one killed with SIGKILL once a third of the messages are done; the time from the kill until
  the last message it held is finished by the other (at least its lease, `--lease`);
- kills: tests/test_roles.py's two kill tests, run by pytest: a gateway holding Telegram's connection (the tests'
  Bot API server), or an email gateway behind a real Postfix and Dovecot, and 2 workers, one of them at random
  killed with SIGKILL and started again 20 times while people keep writing; each message's replies counted.

The last line reads `scale: workers 2 msg/s X ratio R lost 0 duplicated 0 takeover T s`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bridge  # noqa: F401  (telemetry off before any model import)
from benchmarks.peers import PostgresCluster, serve_ready
from benchmarks.stream_server import MODEL, StreamServer
from bridge.dispatch.inbox import Inbox
from bridge.messages import IncomingMessage
from bridge.state.postgres import PostgresState

ROOT = Path(__file__).parent.parent
USER = 5000  # Telegram user ids of the chats: USER, USER + 1, ... (a private chat's id is its user's)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_env(data_dir: Path, state_url: str, llm: StreamServer, args: argparse.Namespace) -> dict[str, str]:
    """A worker's environment: the Telegram platform named (a worker opens no connection), the shared state."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    persons = [{"id": "bench", "accounts": [f"telegram:{USER + chat}" for chat in range(args.chats)]}]
    models = {"main": {"base_url": llm.base_url, "model": MODEL, "concurrency": args.concurrency}}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")}
    env.update({
        "CONFIDE_DATA_DIR": str(data_dir), "CONFIDE_STATE_URL": state_url, "CONFIDE_ROLE": "worker",
        "CONFIDE_PERSONS": json.dumps(persons), "CONFIDE_MODELS": json.dumps(models),
        "CONFIDE_METRICS__PORT": str(free_port()), "CONFIDE_LEASE_S": str(args.lease),
        "CONFIDE_TELEGRAM__ENABLED": "true", "CONFIDE_TELEGRAM__TOKEN": "123:bench",  # a worker opens no connection
        "CONFIDE_RETRIEVAL__MIN_RELEVANCE": "0",  # every question reaches the model: the history is empty
        "CONFIDE_INDEX_CONVERSATIONS": "false", "PYTHONUNBUFFERED": "1",
        "CONFIDE_LOG_LEVEL": os.environ.get("SCALE_LOG_LEVEL", "WARNING"),  # INFO: what each process did
    })  # fmt: skip
    return env


async def start_workers(count: int, state_url: str, llm: StreamServer, args: argparse.Namespace,
                        workdir: Path) -> list[asyncio.subprocess.Process]:  # fmt: skip
    envs = [worker_env(workdir / f"worker{n}", state_url, llm, args) for n in range(count)]
    log = (workdir / "workers.log").open("ab")
    workers = [
        await asyncio.create_subprocess_exec(sys.executable, "-m", "bridge.launch", "serve", env=env,
                                             cwd=env["CONFIDE_DATA_DIR"], stdout=log, stderr=asyncio.subprocess.STDOUT)
        for env in envs
    ]  # fmt: skip
    deadline = time.monotonic() + 120
    for env in envs:
        while not await serve_ready(env):
            if time.monotonic() > deadline:
                raise RuntimeError(f"a worker did not start: see {workdir / 'workers.log'}")
            await asyncio.sleep(0.2)
    return workers


async def stop(workers: list[asyncio.subprocess.Process]) -> None:
    for worker in workers:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            await asyncio.wait_for(worker.wait(), 60)
        except TimeoutError:
            worker.kill()
            await worker.wait()


async def put_all(inbox: Inbox, args: argparse.Namespace) -> None:
    for n in range(args.messages):
        chat = n % args.chats
        text = f"where did I put thing number {n}?"
        await inbox.put(IncomingMessage(channel="telegram", chat_id=str(USER + chat), sender=str(USER + chat),
                                        platform_message_id=str(n), text=text))  # fmt: skip


async def until_done(inbox: Inbox, deadline: float, left: int = 0) -> None:
    """Until at most `left` messages are unfinished (or the deadline passes): a poll, as a gateway sees the queue."""
    while await inbox.unfinished() > left and time.monotonic() < deadline:  # noqa: ASYNC110  (another process's work)
        await asyncio.sleep(0.02)


async def outcome(db: PostgresState) -> dict[str, int]:
    def read(conn: Any) -> dict[str, int]:
        unfinished = conn.execute("SELECT COUNT(*) FROM inbox WHERE status != 'done'").fetchone()[0]
        replies, answered = conn.execute("SELECT COUNT(*), COUNT(DISTINCT inbox_id) FROM outbox").fetchone()
        return {"lost": int(unfinished), "duplicated": int(replies) - int(answered), "replies": int(replies)}

    return await db.run(read)


async def throughput(count: int, state_url: str, llm: StreamServer, args: argparse.Namespace,
                     workdir: Path) -> dict[str, Any]:  # fmt: skip
    db = PostgresState(state_url)
    await db.open()
    inbox = Inbox(db)
    workers = await start_workers(count, state_url, llm, args, workdir)
    try:
        started = time.monotonic()
        await put_all(inbox, args)
        await until_done(inbox, started + args.timeout)
        elapsed = time.monotonic() - started
    finally:
        await stop(workers)
    result = {"workers": count, "seconds": elapsed, "msg_s": args.messages / elapsed, **await outcome(db)}
    await db.close()
    return result


async def takeover(state_url: str, llm: StreamServer, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    db = PostgresState(state_url)
    await db.open()
    inbox = Inbox(db)
    workers = await start_workers(2, state_url, llm, args, workdir)
    try:
        await put_all(inbox, args)
        await until_done(inbox, time.monotonic() + args.timeout, left=args.messages * 2 // 3)
        victim = workers[0]
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        await victim.wait()
        mine = f"%:{victim.pid}:%"
        held = await db.run(lambda conn: [row[0] for row in conn.execute(
            "SELECT id FROM inbox WHERE status='working' AND owner LIKE ?", (mine,)).fetchall()])  # fmt: skip
        await until_done(inbox, killed + args.timeout)
        last = "SELECT MAX(finished_at) FROM inbox WHERE id = ANY(?)"
        done_at = await db.run(lambda conn: conn.execute(last, (held,)).fetchone()[0]) if held else None
        wall_killed = time.time() - (time.monotonic() - killed)
    finally:
        await stop(workers)
    result = {"held": len(held), "takeover_s": (done_at - wall_killed) if done_at else 0.0, **await outcome(db)}
    await db.close()
    return result


def roles_under_kills() -> list[str]:
    """The suite's own kill tests (tests/test_roles.py): one gateway (Telegram's Bot API server of the tests; email
    through Postfix and Dovecot) and two workers, one killed with SIGKILL at random 20 times while people write. Run
    as pytest runs them, as benchmarks/chaos.py runs the chaos test; their `roles:` lines."""
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_roles.py",
               "-k", "killed"]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [line[line.index("roles: ") :] for line in run.stdout.splitlines() if "roles: " in line]
    if run.returncode != 0 or len(lines) != 2:
        raise RuntimeError(f"tests/test_roles.py failed:\n{run.stdout[-3000:]}{run.stderr[-2000:]}")
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure")
    parser.add_argument("--concurrency", type=int, default=16, help="each worker's requests in flight to the model")
    parser.add_argument("--lease", type=float, default=5.0, help="CONFIDE_LEASE_S of the workers")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    llm = await StreamServer().start()
    cluster = PostgresCluster().start()
    print(f"cores: {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}); {args.messages} messages in "
          f"{args.chats} chats; PostgreSQL {cluster.url().rsplit('@', 1)[-1]} (private, tmpfs, fsync off)")  # fmt: skip
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="confide-scale-") as tmp:
            for count in [int(n) for n in args.workers.split(",")]:
                result = await throughput(count, cluster.new_database(), llm, args, Path(tmp) / f"w{count}")
                results.append(result)
                print(f"workers {count}: {result['msg_s']:.1f} msg/s ({result['seconds']:.1f} s), "
                      f"lost {result['lost']}, duplicated {result['duplicated']}", flush=True)  # fmt: skip
            taken = await takeover(cluster.new_database(), llm, args, Path(tmp) / "takeover")

    finally:
        cluster.stop()
        await llm.stop()
    one = next(r for r in results if r["workers"] == 1)["msg_s"]
    for result in results:
        print(f"  ratio to 1 worker, {result['workers']} workers: {result['msg_s'] / one:.2f}")
    print(f"kill -9 of one of 2 workers under load: it held {taken['held']} message(s); the other finished them "
          f"{taken['takeover_s']:.1f} s after the kill (lease {args.lease:g} s); lost {taken['lost']}, "
          f"duplicated {taken['duplicated']}")  # fmt: skip
    kill_lines = roles_under_kills()
    for line in kill_lines:
        print(line)
    two = next(r for r in results if r["workers"] == 2)
    phases = [*results, taken]
    lost = sum(p["lost"] for p in phases) + sum(int(line.split(" lost ")[1].split()[0]) for line in kill_lines)
    duplicated = sum(p["duplicated"] for p in phases) + sum(int(line.split(" duplicated ")[1]) for line in kill_lines)
    print(f"scale: workers 2 msg/s {two['msg_s']:.1f} ratio {two['msg_s'] / one:.2f} lost {lost} "
          f"duplicated {duplicated} takeover {taken['takeover_s']:.1f} s")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
