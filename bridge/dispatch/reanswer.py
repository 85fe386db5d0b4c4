"""Answers owed: a question that got the labelled fallback (its model was down for longer than the wait) gets
the real answer once the model is back, once: the fallback message is edited into the answer where the platform
can edit a sent message (Telegram, Matrix), else the answer follows as a reply to the question (in the same mail
thread).

The debt is written in the same transaction as the fallback reply (table `fallbacks`), and paid in the same
transaction as the follow-up is queued: a crash in between neither loses it nor pays it twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bridge.dispatch.inbox import Inbox
from bridge.language.catalog import N_
from bridge.messages import IncomingMessage
from bridge.state.store import Connection

FOLLOW_UP = N_("The model is back; here is the answer to your question:\n\n")


@dataclass(frozen=True)
class Owed:
    inbox_id: int
    model: str
    message: IncomingMessage


def record(conn: Connection, inbox_id: int, model: str) -> None:
    conn.execute(
        "INSERT INTO fallbacks (inbox_id, model, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (inbox_id, model, time.time()),
    )


def paid(conn: Connection, inbox_id: int) -> bool:
    """Mark the answer paid; False if another process paid it first (workers look for owed answers side by side)."""
    cursor = conn.execute(
        "UPDATE fallbacks SET answered_at=? WHERE inbox_id=? AND answered_at IS NULL", (time.time(), inbox_id)
    )
    return cursor.rowcount == 1


def fallback_receipt(conn: Connection, inbox_id: int) -> str | None:
    """The platform's id of the fallback reply to a message, once it was delivered (the first reply it got)."""
    row = conn.execute(
        "SELECT receipt FROM outbox WHERE inbox_id=? AND status='sent' AND receipt IS NOT NULL ORDER BY id LIMIT 1",
        (inbox_id,),
    ).fetchone()
    return str(row[0]) if row else None


async def owed(inbox: Inbox, limit: int = 20) -> list[Owed]:
    """The oldest answers still owed, with the messages they answer."""

    def query(conn: Connection) -> list[Owed]:
        rows = conn.execute(
            "SELECT f.inbox_id, f.model, i.payload FROM fallbacks f JOIN inbox i ON i.id = f.inbox_id"
            " WHERE f.answered_at IS NULL ORDER BY f.inbox_id LIMIT ?",
            (limit,),
        ).fetchall()
        return [Owed(r[0], r[1], IncomingMessage.model_validate_json(r[2])) for r in rows]

    return await inbox.transact(query)
