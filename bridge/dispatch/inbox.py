"""The durable inbox: accepted messages survive a crash, and each chat is worked in arrival order.

`put` is idempotent on (channel, platform message id), so an adapter may hand over the same platform
event twice (a redelivered Telegram update, a re-synced Matrix event) and it is stored once. An
adapter acknowledges to its platform only after `put` returned.

Several processes may work one inbox (PostgreSQL). A taken message carries its taker (`owner`) and a lease that the
taker renews while it lives (`renew`); only a chat's oldest unfinished message may be taken, and only while no live
lease holds it, so each chat stays in order whoever works it. A taker that dies (SIGKILL, a lost machine) stops
renewing, and once its lease runs out another process takes the message over, counting the death against it where
it was at work. On PostgreSQL a claim locks its row (`FOR UPDATE SKIP LOCKED`: two takers never wait on each other,
and never both take it), and a new message wakes every process through NOTIFY.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bridge.dispatch.outbox import OUTBOX_CHANNEL, enqueue_reply
from bridge.messages import IncomingMessage, OutgoingReply
from bridge.ops.diskspace import DiskRoom
from bridge.state.store import Connection, StateStore, clock

log = logging.getLogger(__name__)
T = TypeVar("T")
LEASE_S = 30.0  # how long a taken message stays with its taker without a renewal
NOTIFY_CHANNEL = "confide_inbox"  # PostgreSQL: a new message, for every process that works this inbox
# Taken messages pending again, none of them at work.
PUT_BACK = "UPDATE inbox SET status='pending', at_work=0, owner=NULL, lease_until=NULL WHERE status='working'"
# Only while this process holds the message (or nobody does: a row of a version before owners): one that lost it to
# another process changes nothing of it.
HELD = "(owner=? OR owner IS NULL)"
# Each chat's oldest unfinished message, where no live lease of another taker holds it: what may be taken now.
_HEADS = (
    "SELECT {columns} FROM inbox i WHERE i.status != 'done'"
    " AND i.id = (SELECT MIN(j.id) FROM inbox j WHERE j.chat_key = i.chat_key AND j.status != 'done')"
    " AND (i.status = 'pending' OR i.owner = ? OR i.lease_until IS NULL OR i.lease_until < ?)"
)


def new_owner() -> str:
    """This process's name as a taker of messages: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseLost(RuntimeError):
    """This process no longer holds the message it was working on: another took it over."""


@dataclass(frozen=True)
class Claimed:
    inbox_id: int
    message: IncomingMessage
    # How often the process died while this message was at work (its model request sent, or its command running).
    # A restart while it only waited for its turn does not count: it never had a chance to crash anything.
    interrupted: int
    failures: int = 0  # how often its handling failed with an error (restarts do not count)


class Inbox:
    def __init__(
        self, db: StateStore, room: DiskRoom | None = None, owner: str | None = None, lease_s: float = LEASE_S
    ) -> None:
        self._db = db
        self.room = room  # None: the disk is not watched (tests of the queue alone)
        self.changed = asyncio.Event()
        self.owner = owner or new_owner()
        self.lease_s = lease_s
        self._shared = db.dialect == "postgresql"  # other processes may work this inbox

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
            created = cursor.rowcount == 1
            if created and self._shared:  # sent at commit, to every process listening
                conn.execute("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, message.chat_key))
            return created

        created = await self._db.run(insert)
        if created:
            self.changed.set()
        else:
            log.debug("duplicate message %s/%s ignored", message.channel, message.platform_message_id)
        return created

    async def recover(self) -> int:
        """At start: work that a dead process started and did not finish is pending again, counted against the
        messages that were at work. One process per SQLite file: every taken message was its predecessor's. Several
        on PostgreSQL: only those whose lease ran out (a live process holds the others)."""

        def reset(conn: Connection) -> int:
            dead = "status='working'" + ("" if not self._shared else " AND (lease_until IS NULL OR lease_until < ?)")
            parameters = (clock(conn, self._db.dialect),) if self._shared else ()
            conn.execute(f"UPDATE inbox SET attempts=attempts+1 WHERE {dead} AND at_work=1", parameters)
            return conn.execute(PUT_BACK.replace("status='working'", dead), parameters).rowcount

        count = await self._db.run(reset)
        if count:
            log.info("resuming %d message(s) interrupted by the last shutdown", count)
            self.changed.set()
        return count

    async def release_taken(self) -> None:
        """A stop of our own: the messages this process took or had at work are pending again, and none of them is
        blamed for it."""
        await self._db.run(lambda conn: conn.execute(PUT_BACK + " AND owner=?", (self.owner,)))

    async def renew(self) -> int:
        """Extend the lease on every message this process holds; returns how many it holds."""

        def extend(conn: Connection) -> int:
            until = clock(conn, self._db.dialect) + self.lease_s
            return conn.execute(
                "UPDATE inbox SET lease_until=? WHERE status='working' AND owner=?", (until, self.owner)
            ).rowcount

        return await self._db.run(extend)

    async def keep_leases(self) -> None:
        """Renew this process's leases every third of a lease, until cancelled: a live taker keeps its messages."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.renew()
            except Exception:
                log.exception("renewing the leases of %s failed; trying again in %.0f s", self.owner, self.lease_s / 3)

    async def watch(self) -> None:
        """Until cancelled, wake the dispatcher for what other processes do: a message they stored (NOTIFY), and,
        every half lease, messages whose taker died."""
        if not self._shared:
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(self._db.listen(NOTIFY_CHANNEL, self.changed.set), name="confide-inbox-listen")
            while True:
                await asyncio.sleep(self.lease_s / 2)
                self.changed.set()

    async def pending_chats(self, exclude: set[str]) -> list[str]:
        """Chats whose next message may be taken now, the longest waiting first."""

        def query(conn: Connection) -> list[str]:
            sql = _HEADS.format(columns="i.chat_key") + " ORDER BY i.id"
            rows = conn.execute(sql, (self.owner, clock(conn, self._db.dialect))).fetchall()
            return [r["chat_key"] for r in rows if r["chat_key"] not in exclude]

        return await self._db.run(query)

    async def claim_next(self, chat_key: str) -> Claimed | None:
        """The oldest unfinished message of a chat, taken by this process under a lease (not yet at work: see
        `at_work`); None when the chat has none, or another live process holds it. One whose taker died (its lease
        ran out) is taken over, its death counted where it was at work."""

        def claim(conn: Connection) -> Claimed | None:
            columns = "i.id, i.payload, i.attempts, i.failures, i.status, i.at_work, i.owner"
            sql = _HEADS.format(columns=columns) + " AND i.chat_key=?"
            if self._shared:  # a row another taker is claiming right now is skipped, never waited for
                sql += " FOR UPDATE SKIP LOCKED"
            now = clock(conn, self._db.dialect)
            row = conn.execute(sql, (self.owner, now, chat_key)).fetchone()
            if row is None:
                return None
            attempts = row["attempts"]
            if row["status"] == "working" and row["owner"] != self.owner:  # its taker died: taken over
                attempts += 1 if row["at_work"] else 0
                conn.execute("UPDATE inbox SET at_work=0, attempts=? WHERE id=?", (attempts, row["id"]))
                log.warning("taking over message %d of chat %s from %s, whose lease ran out", row["id"], chat_key,
                            row["owner"])  # fmt: skip
            conn.execute(
                "UPDATE inbox SET status='working', owner=?, lease_until=? WHERE id=?",
                (self.owner, now + self.lease_s, row["id"]),
            )
            message = IncomingMessage.model_validate_json(row["payload"])
            return Claimed(row["id"], message, attempts, row["failures"])

        return await self._db.run(claim)

    async def at_work(self, inbox_id: int) -> None:
        """The message is really being worked on now: a death of the process from here on counts against it."""
        await self._db.run(lambda conn: conn.execute(f"UPDATE inbox SET at_work=1 WHERE id=? AND {HELD}",
                                                     (inbox_id, self.owner)))  # fmt: skip

    async def finish(
        self,
        inbox_id: int,
        outcome: str,
        replies: list[OutgoingReply],
        also: Callable[[Connection], None] | None = None,
    ) -> None:
        """Mark a message done and queue its replies in one transaction: a reply exists at most once. Only while this
        process still holds the message: one that lost it (its lease ran out while it was stalled, and another
        process took it over) gets LeaseLost, and nothing of its work is kept."""

        def commit(conn: Connection) -> None:
            done = conn.execute(
                f"UPDATE inbox SET status='done', outcome=?, finished_at=? WHERE id=? AND {HELD}",
                (outcome, time.time(), inbox_id, self.owner),
            )
            if done.rowcount != 1:
                raise LeaseLost(f"message {inbox_id} was taken over by another process; its answer here is dropped")
            for reply in replies:
                enqueue_reply(conn, reply, inbox_id)
            if also is not None:
                also(conn)
            if replies and self._shared:  # the gateway that delivers them is woken at commit
                conn.execute("SELECT pg_notify(?, ?)", (OUTBOX_CHANNEL, replies[0].channel))

        await self._db.run(commit)

    async def rewrite(self, inbox_id: int, message: IncomingMessage) -> None:
        """The message as it is now understood (a voice message as its transcript): a retry after a crash, and an
        answer owed after a fallback, work from this rather than hearing it again."""
        payload = message.model_dump_json()
        await self._db.run(lambda conn: conn.execute(f"UPDATE inbox SET payload=? WHERE id=? AND {HELD}",
                                                     (payload, inbox_id, self.owner)))  # fmt: skip

    async def transact(self, fn: Callable[[Connection], T]) -> T:
        """Work that commits together with the inbox's and the outbox's rows (one transaction)."""
        return await self._db.run(fn)

    async def failed(self, inbox_id: int) -> int:
        """Count one failure of a message's handling; returns how many it has had."""

        def count(conn: Connection) -> int:
            conn.execute(f"UPDATE inbox SET failures=failures+1 WHERE id=? AND {HELD}", (inbox_id, self.owner))
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
