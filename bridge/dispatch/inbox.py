"""The durable inbox: accepted messages survive a crash, and each chat is worked in arrival order.

`put` is idempotent on (channel, platform message id), so an adapter may hand over the same platform
event twice (a redelivered Telegram update, a re-synced Matrix event) and it is stored once. An
adapter acknowledges to its platform only after `put` returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bridge.dispatch.outbox import enqueue_reply
from bridge.messages import IncomingMessage, OutgoingReply
from bridge.ops.diskspace import DiskRoom
from bridge.state.store import Connection, StateStore

log = logging.getLogger(__name__)
T = TypeVar("T")
# Taken messages pending again, none of them at work: after a death (recover) or a stop of our own (release_taken).
PUT_BACK = "UPDATE inbox SET status='pending', at_work=0 WHERE status='working'"


@dataclass(frozen=True)
class Claimed:
    inbox_id: int
    message: IncomingMessage
    # How often the process died while this message was at work (its model request sent, or its command running).
    # A restart while it only waited for its turn does not count: it never had a chance to crash anything.
    interrupted: int
    failures: int = 0  # how often its handling failed with an error (restarts do not count)


class Inbox:
    def __init__(self, db: StateStore, room: DiskRoom | None = None) -> None:
        self._db = db
        self.room = room  # None: the disk is not watched (tests of the queue alone)
        self.changed = asyncio.Event()

    async def wait_for_room(self) -> None:
        if self.room is not None:
            await self.room.wait()

    def has_room(self) -> bool:
        return self.room is None or self.room.has_room()

    async def put(self, message: IncomingMessage) -> bool:
        """Store a message; True if it is new, False if it was already there. NoRoom below the disk's floor."""
        if self.room is not None:
            self.room.check()

        def insert(conn: Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO inbox (channel, platform_message_id, chat_key, payload, received_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    message.channel,
                    message.platform_message_id,
                    message.chat_key,
                    message.model_dump_json(),
                    time.time(),
                ),
            )
            return cursor.rowcount == 1

        created = await self._db.run(insert)
        if created:
            self.changed.set()
        else:
            log.debug("duplicate message %s/%s ignored", message.channel, message.platform_message_id)
        return created

    async def recover(self) -> int:
        """After a crash, work that was started but not finished is pending again."""

        def reset(conn: Connection) -> int:
            conn.execute("UPDATE inbox SET attempts=attempts+1 WHERE status='working' AND at_work=1")
            return conn.execute(PUT_BACK).rowcount

        count = await self._db.run(reset)
        if count:
            log.info("resuming %d message(s) interrupted by the last shutdown", count)
            self.changed.set()
        return count

    async def release_taken(self) -> None:
        """A stop of our own: messages taken or at work are pending again, and none of them is blamed for it."""
        await self._db.run(lambda conn: conn.execute(PUT_BACK))

    async def pending_chats(self, exclude: set[str]) -> list[str]:
        def query(conn: Connection) -> list[str]:
            rows = conn.execute(
                "SELECT chat_key, MIN(id) AS first FROM inbox WHERE status='pending' GROUP BY chat_key ORDER BY first"
            ).fetchall()
            return [r["chat_key"] for r in rows if r["chat_key"] not in exclude]

        return await self._db.run(query)

    async def claim_next(self, chat_key: str) -> Claimed | None:
        """The oldest unfinished message of a chat, marked as taken (not yet at work: see `at_work`)."""

        def claim(conn: Connection) -> Claimed | None:
            row = conn.execute(
                "SELECT id, payload, attempts, failures FROM inbox"
                " WHERE chat_key=? AND status IN ('pending','working') ORDER BY id LIMIT 1",
                (chat_key,),
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE inbox SET status='working' WHERE id=?", (row["id"],))
            message = IncomingMessage.model_validate_json(row["payload"])
            return Claimed(row["id"], message, row["attempts"], row["failures"])

        return await self._db.run(claim)

    async def at_work(self, inbox_id: int) -> None:
        """The message is really being worked on now: a death of the process from here on counts against it."""
        await self._db.run(lambda conn: conn.execute("UPDATE inbox SET at_work=1 WHERE id=?", (inbox_id,)))

    async def finish(
        self,
        inbox_id: int,
        outcome: str,
        replies: list[OutgoingReply],
        also: Callable[[Connection], None] | None = None,
    ) -> None:
        """Mark a message done and queue its replies in one transaction: a reply exists at most once."""

        def commit(conn: Connection) -> None:
            for reply in replies:
                enqueue_reply(conn, reply, inbox_id)
            if also is not None:
                also(conn)
            conn.execute(
                "UPDATE inbox SET status='done', outcome=?, finished_at=? WHERE id=?",
                (outcome, time.time(), inbox_id),
            )

        await self._db.run(commit)

    async def rewrite(self, inbox_id: int, message: IncomingMessage) -> None:
        """The message as it is now understood (a voice message as its transcript): a retry after a crash, and an
        answer owed after a fallback, work from this rather than hearing it again."""
        payload = message.model_dump_json()
        await self._db.run(lambda conn: conn.execute("UPDATE inbox SET payload=? WHERE id=?", (payload, inbox_id)))

    async def transact(self, fn: Callable[[Connection], T]) -> T:
        """Work that commits together with the inbox's and the outbox's rows (one transaction)."""
        return await self._db.run(fn)

    async def failed(self, inbox_id: int) -> int:
        """Count one failure of a message's handling; returns how many it has had."""

        def count(conn: Connection) -> int:
            conn.execute("UPDATE inbox SET failures=failures+1 WHERE id=?", (inbox_id,))
            return int(conn.execute("SELECT failures FROM inbox WHERE id=?", (inbox_id,)).fetchone()[0])

        return await self._db.run(count)

    async def unfinished(self, channel: str | None = None) -> int:
        """Messages accepted and not yet finished (the queue depth)."""

        def count(conn: Connection) -> int:
            sql = "SELECT COUNT(*) FROM inbox WHERE status!='done'"
            if channel is None:
                return conn.execute(sql).fetchone()[0]
            return conn.execute(sql + " AND channel=?", (channel,)).fetchone()[0]

        return await self._db.run(count)
