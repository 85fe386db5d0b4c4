"""A worker process over a PostgreSQL inbox, for tests/test_shared_inbox.py to SIGKILL at random moments.

It works as Confide's dispatcher does, through the same Inbox: every chat whose next message may be taken, that
message claimed under a lease (renewed while it lives), put at work, "answered" after a pause (the model), and
finished together with its reply and a row in `answered` (one transaction). Run:
    python -m tests.state_worker STATE_URL LEASE_S
"""

from __future__ import annotations

import asyncio
import random
import sys

from bridge.dispatch.inbox import Claimed, Inbox
from bridge.messages import OutgoingReply
from bridge.state.postgres import PostgresState
from bridge.state.store import Connection


async def work(inbox: Inbox, claimed: Claimed) -> None:
    await inbox.at_work(claimed.inbox_id)
    await asyncio.sleep(random.uniform(0.02, 0.15))  # the model answering
    reply = OutgoingReply(reply_id=f"reply-{claimed.inbox_id}", channel=claimed.message.channel,
                          chat_id=claimed.message.chat_id, text=f"answer to {claimed.message.text}")  # fmt: skip

    def answered(conn: Connection) -> None:
        conn.execute("INSERT INTO answered (inbox_id, owner) VALUES (?, ?)", (claimed.inbox_id, inbox.owner))

    await inbox.finish(claimed.inbox_id, "answered", [reply], answered)


async def work_chat(inbox: Inbox, chat_key: str, running: set[str]) -> None:
    try:
        while (claimed := await inbox.claim_next(chat_key)) is not None:
            await work(inbox, claimed)
    finally:
        running.discard(chat_key)
        inbox.changed.set()


async def main(url: str, lease_s: float) -> None:
    db = PostgresState(url, pool_size=4)
    await db.open()
    inbox = Inbox(db, lease_s=lease_s)
    await inbox.recover()
    running: set[str] = set()
    print(inbox.owner, flush=True)  # the test reads it: this process is ready
    async with asyncio.TaskGroup() as group:
        group.create_task(inbox.keep_leases())
        group.create_task(inbox.watch())
        while True:
            inbox.changed.clear()
            for chat_key in await inbox.pending_chats(exclude=running):
                running.add(chat_key)
                group.create_task(work_chat(inbox, chat_key, running))
            await inbox.changed.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
