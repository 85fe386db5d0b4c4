"""Which parts of which reply Telegram already took, so a redelivered reply sends nothing twice.

Telegram has no idempotency key: the outbox retries a reply whose delivery raised (say, part 2 of 2
failed) or whose receipt was not recorded before a crash. Each part is written here as soon as
Telegram returned its message id, so a retry continues with the first part not yet sent.

The rows live in the state database (table `telegram_sent_parts`, owner "telegram" in its versions).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from bridge.state import Migration, apply_migrations, connect, old_rows

OWNER = "telegram"
_KEEP_S = 30 * 24 * 3600  # the outbox gives up long before this


def migrations(old_file: Path | None = None) -> list[Migration]:
    """This adapter's tables; version 1 takes over the rows of the file earlier versions kept them in."""

    def create(conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE telegram_sent_parts (reply_id TEXT NOT NULL, part INTEGER NOT NULL, "
            "message_id INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (reply_id, part))"
        )
        rows = old_rows(old_file, "SELECT reply_id, part, message_id, at FROM sent_parts")
        conn.executemany("INSERT OR IGNORE INTO telegram_sent_parts VALUES (?, ?, ?, ?)", rows)

    return [(1, create)]


class SentParts:
    """`state_path`: the state database; `old_file`: delivered.sqlite3 of an earlier version, read once."""

    def __init__(self, state_path: Path, old_file: Path | None = None) -> None:
        self._conn = connect(state_path)
        apply_migrations(self._conn, OWNER, migrations(old_file))
        self._conn.execute("DELETE FROM telegram_sent_parts WHERE at < ?", (time.time() - _KEEP_S,))
        self._lock = asyncio.Lock()

    async def parts(self, reply_id: str) -> dict[int, int]:
        async with self._lock:
            rows = await asyncio.to_thread(
                lambda: self._conn.execute(
                    "SELECT part, message_id FROM telegram_sent_parts WHERE reply_id = ?", (reply_id,)
                ).fetchall()
            )
        return {part: message_id for part, message_id in rows}

    async def record(self, reply_id: str, part: int, message_id: int) -> None:
        async with self._lock:
            await asyncio.to_thread(
                self._conn.execute,
                "INSERT OR REPLACE INTO telegram_sent_parts VALUES (?, ?, ?, ?)",
                (reply_id, part, message_id, time.time()),
            )

    def close(self) -> None:
        self._conn.close()
