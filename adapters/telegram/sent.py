"""Which parts of which reply Telegram already took, so a redelivered reply sends nothing twice.

Telegram has no idempotency key: the outbox retries a reply whose delivery raised (say, part 2 of 2
failed) or whose receipt was not recorded before a crash. Each part is written here as soon as
Telegram returned its message id, so a retry continues with the first part not yet sent.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

_KEEP_S = 30 * 24 * 3600  # the outbox gives up long before this


class SentParts:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS sent_parts (reply_id TEXT NOT NULL, part INTEGER NOT NULL, "
            "message_id INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (reply_id, part))"
        )
        self._conn.execute("DELETE FROM sent_parts WHERE at < ?", (time.time() - _KEEP_S,))
        self._lock = asyncio.Lock()

    async def parts(self, reply_id: str) -> dict[int, int]:
        async with self._lock:
            rows = await asyncio.to_thread(
                lambda: self._conn.execute(
                    "SELECT part, message_id FROM sent_parts WHERE reply_id = ?", (reply_id,)
                ).fetchall()
            )
        return {part: message_id for part, message_id in rows}

    async def record(self, reply_id: str, part: int, message_id: int) -> None:
        async with self._lock:
            await asyncio.to_thread(
                self._conn.execute,
                "INSERT OR REPLACE INTO sent_parts VALUES (?, ?, ?, ?)",
                (reply_id, part, message_id, time.time()),
            )

    def close(self) -> None:
        self._conn.close()
