"""The durable outbox: replies wait here until their adapter confirms delivery.

Each reply carries a `reply_id` that adapters use as the platform's idempotency key (Matrix
transaction id, email Message-ID), so a delivery retried after a crash is never a second message.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bridge.messages import OutgoingReply
from bridge.state.store import Connection, StateStore

log = logging.getLogger(__name__)
OUTBOX_CHANNEL = "confide_outbox"  # PostgreSQL NOTIFY: a reply waits for the gateway that delivers it


def enqueue_reply(conn: Connection, reply: OutgoingReply, inbox_id: int | None) -> None:
    conn.execute(
        "INSERT INTO outbox (reply_id, inbox_id, channel, payload, created_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (reply.reply_id, inbox_id, reply.channel, reply.model_dump_json(), time.time()),
    )


@dataclass(frozen=True)
class Pending:
    outbox_id: int
    reply: OutgoingReply
    attempts: int


class Outbox:
    def __init__(self, db: StateStore) -> None:
        self._db = db

    async def pending(self, channel: str, limit: int = 100) -> list[Pending]:
        def query(conn: Connection) -> list[Pending]:
            rows = conn.execute(
                "SELECT id, payload, attempts FROM outbox WHERE status='pending' AND channel=? ORDER BY id LIMIT ?",
                (channel, limit),
            ).fetchall()
            return [Pending(r["id"], OutgoingReply.model_validate_json(r["payload"]), r["attempts"]) for r in rows]

        return await self._db.run(query)

    async def mark_sent(self, outbox_id: int, receipt: str | None) -> None:
        await self._db.run(
            lambda conn: conn.execute(
                "UPDATE outbox SET status='sent', receipt=?, sent_at=? WHERE id=?",
                (receipt, time.time(), outbox_id),
            )
        )

    async def mark_attempt_failed(self, outbox_id: int, error: str, give_up: bool) -> None:
        status = "failed" if give_up else "pending"
        await self._db.run(
            lambda conn: conn.execute(
                "UPDATE outbox SET attempts=attempts+1, last_error=?, status=? WHERE id=?",
                (error[:2000], status, outbox_id),
            )
        )

    async def unsent(self, channel: str, ready_only: bool = False) -> int:
        """Replies of a channel not sent yet; `ready_only`: only those that never failed (none in a back-off)."""

        def count(conn: Connection) -> int:
            sql = "SELECT COUNT(*) FROM outbox WHERE status='pending' AND channel=?"
            return conn.execute(sql + (" AND attempts=0" if ready_only else ""), (channel,)).fetchone()[0]

        return await self._db.run(count)


class Drafts:
    """The platform handle of a reply being streamed, so a restart finishes the same message."""

    def __init__(self, db: StateStore) -> None:
        self._db = db

    async def get(self, inbox_id: int) -> str | None:
        def query(conn: Connection) -> str | None:
            row = conn.execute("SELECT edit_token FROM drafts WHERE inbox_id=?", (inbox_id,)).fetchone()
            return row[0] if row else None

        return await self._db.run(query)

    async def save(self, inbox_id: int, token: str) -> None:
        await self._db.run(
            lambda conn: conn.execute(
                "INSERT INTO drafts (inbox_id, edit_token) VALUES (?, ?)"
                " ON CONFLICT (inbox_id) DO UPDATE SET edit_token=excluded.edit_token",
                (inbox_id, token),
            )
        )
