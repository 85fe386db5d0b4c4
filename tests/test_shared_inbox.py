"""One inbox, several processes (PostgreSQL): claims under leases, each chat in order, a dead taker's messages taken
over, wake-ups by NOTIFY; and worker processes killed with SIGKILL at random moments while every message is
answered exactly once. The lease rules hold on SQLite too (one process, several takers), and are checked there."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from bridge.dispatch.inbox import Inbox, LeaseLost
from bridge.messages import IncomingMessage, OutgoingReply
from bridge.state.db import StateDB
from bridge.state.postgres import PostgresState
from bridge.state.store import StateStore

LEASE_S = 0.6


def message(pid: str, chat: str = "c1") -> IncomingMessage:
    return IncomingMessage(channel="telegram", chat_id=chat, sender="100", platform_message_id=pid, text=f"q{pid}")


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "sqlite":
        db: StateStore = StateDB(tmp_path / "state.sqlite3")
    else:
        db = PostgresState(request.getfixturevalue("state_url"))
    await db.open()
    yield db  # type: ignore[misc]
    await db.close()


async def test_a_chat_held_by_a_live_taker_waits_and_is_taken_over_when_its_lease_runs_out(store: StateStore) -> None:
    first, second = Inbox(store, lease_s=LEASE_S), Inbox(store, lease_s=LEASE_S)
    for pid, chat in [("1", "a"), ("2", "a"), ("3", "b")]:
        await first.put(message(pid, chat))
    held = await first.claim_next("telegram:a")
    assert held is not None and held.message.platform_message_id == "1"
    await first.at_work(held.inbox_id)
    for _ in range(3):  # the first taker lives, renewing, for longer than a lease
        assert await second.pending_chats(exclude=set()) == ["telegram:b"]
        assert await second.claim_next("telegram:a") is None, "a chat's second message was taken before its first"
        await asyncio.sleep(LEASE_S / 2)
        assert await first.renew() == 1
    await asyncio.sleep(LEASE_S * 1.5)  # then it dies: no renewal
    assert await second.pending_chats(exclude=set()) == ["telegram:a", "telegram:b"]
    taken = await second.claim_next("telegram:a")
    assert taken is not None and taken.inbox_id == held.inbox_id and taken.interrupted == 1
    with pytest.raises(LeaseLost):  # the stalled first taker wakes up: its answer is not kept
        await first.finish(held.inbox_id, "answered", [OutgoingReply(reply_id="late", channel="telegram",
                                                                     chat_id="a", text="late")])  # fmt: skip
    await second.finish(taken.inbox_id, "answered", [])
    following = await second.claim_next("telegram:a")
    assert following is not None and following.message.platform_message_id == "2"


async def test_a_stop_puts_back_only_what_this_process_held(store: StateStore) -> None:
    first, second = Inbox(store, lease_s=LEASE_S), Inbox(store, lease_s=LEASE_S)
    await first.put(message("1", "a"))
    await first.put(message("2", "b"))
    assert await first.claim_next("telegram:a") is not None
    assert await second.claim_next("telegram:b") is not None
    await first.release_taken()
    assert await first.pending_chats(exclude=set()) == ["telegram:a"]  # b stays with the second, which lives
    assert await second.renew() == 1


async def test_concurrent_takers_never_share_a_message_and_keep_each_chat_in_order(state_url: str) -> None:
    """Four takers, each with its own connections, race over 6 chats of 8 messages: each message is taken once
    (while its taker lives) and finished once, and each chat's messages are finished in the order they came."""
    stores = [PostgresState(state_url, pool_size=3) for _ in range(4)]
    for db in stores:
        await db.open()
    inboxes = [Inbox(db, lease_s=30) for db in stores]
    for n in range(48):
        await inboxes[0].put(message(str(n), f"c{n % 6}"))
    finished: list[tuple[str, int, str]] = []

    async def take(inbox: Inbox) -> None:
        while chats := await inbox.pending_chats(exclude=set()):
            for chat_key in random.sample(chats, len(chats)):
                claimed = await inbox.claim_next(chat_key)
                if claimed is None:
                    continue
                await asyncio.sleep(random.uniform(0, 0.01))
                await inbox.finish(claimed.inbox_id, "answered", [])
                finished.append((chat_key, int(claimed.message.platform_message_id), inbox.owner))

    await asyncio.gather(*(take(inbox) for inbox in inboxes))
    for db in stores:
        await db.close()
    assert sorted(n for _, n, _ in finished) == list(range(48)), "a message was finished twice, or never"
    for chat in range(6):
        order = [n for chat_key, n, _ in finished if chat_key == f"telegram:c{chat}"]
        assert order == sorted(order), f"chat c{chat} was answered out of order: {order}"
    assert len({owner for _, _, owner in finished}) > 1, "one taker did everything: the race did not happen"


async def test_a_message_stored_by_one_process_wakes_the_others(state_url: str) -> None:
    here, there = PostgresState(state_url), PostgresState(state_url)
    await here.open()
    await there.open()
    listener = Inbox(there, lease_s=30)
    watching = asyncio.create_task(listener.watch())
    await asyncio.sleep(1.0)  # LISTEN is in place
    listener.changed.clear()
    await Inbox(here).put(message("1"))
    await asyncio.wait_for(listener.changed.wait(), 5)  # NOTIFY, not the look every half lease (15 s)
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    await here.close()
    await there.close()


CYCLES = 20


async def test_workers_killed_at_random_answer_every_message_exactly_once(state_url: str) -> None:
    """Two worker processes (tests/state_worker.py) over one PostgreSQL inbox; 20 times one of them, at random, is
    killed with SIGKILL and started again, while messages keep coming. Every message is answered exactly once:
    one `answered` row (written in the transaction that finishes it), one reply queued, in each chat's order."""
    db = PostgresState(state_url)
    await db.open()
    await db.run(lambda conn: conn.execute("CREATE TABLE answered (inbox_id INTEGER, owner TEXT, at REAL)"))
    await db.run(
        lambda conn: conn.execute("ALTER TABLE answered ALTER COLUMN at SET DEFAULT extract(epoch from now())")
    )
    inbox = Inbox(db)

    async def start() -> asyncio.subprocess.Process:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.state_worker", state_url, str(LEASE_S), stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
        )  # fmt: skip
        assert worker.stdout is not None
        await asyncio.wait_for(worker.stdout.readline(), 60)  # its owner name: it is ready
        return worker

    workers = [await start(), await start()]
    sent = 0
    try:
        for _ in range(CYCLES):
            for _ in range(6):
                await inbox.put(message(str(sent), f"c{sent % 5}"))
                sent += 1
            await asyncio.sleep(random.uniform(0.05, 0.4))
            victim = random.randrange(2)
            os.kill(workers[victim].pid, signal.SIGKILL)
            await workers[victim].wait()
            workers[victim] = await start()

        async def all_done() -> bool:
            return await inbox.unfinished() == 0

        deadline = asyncio.get_running_loop().time() + 60
        while not await all_done():
            assert asyncio.get_running_loop().time() < deadline, f"{await inbox.unfinished()} messages never answered"
            await asyncio.sleep(0.2)
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    answered = await db.run(lambda conn: conn.execute(
        "SELECT i.platform_message_id, i.chat_key, COUNT(a.inbox_id) FROM inbox i LEFT JOIN answered a"
        " ON a.inbox_id = i.id GROUP BY i.id, i.platform_message_id, i.chat_key ORDER BY MIN(a.at), i.id"
    ).fetchall())  # fmt: skip
    replies = await db.run(
        lambda conn: conn.execute("SELECT COUNT(*), COUNT(DISTINCT inbox_id) FROM outbox").fetchone()
    )
    taken_over = await db.run(lambda conn: conn.execute("SELECT COUNT(*) FROM inbox WHERE attempts > 0").fetchone()[0])
    await db.close()
    assert sent == CYCLES * 6 and len(answered) == sent
    assert [count for _, _, count in answered] == [1] * sent, "a message was answered twice, or not at all"
    assert tuple(replies) == (sent, sent), "a reply was queued twice"
    for chat in range(5):
        order = [int(pid) for pid, chat_key, _ in answered if chat_key == f"telegram:c{chat}"]
        assert order == sorted(order), f"chat c{chat} was answered out of order"
    assert taken_over > 0, "no kill ever caught a message at work: the takeover was not exercised"
