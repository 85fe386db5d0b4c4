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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from bridge.state import Migration, apply_migrations, connect, old_rows

OWNER = "telegram"
T = TypeVar("T")
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

    # Version 2: a part is recorded as being sent before the call. A stop after Telegram took it and before its
    # message id was recorded leaves it "in doubt": sent again and counted (the Bot API cannot list a chat).
    sending = (
        "CREATE TABLE telegram_sending (reply_id TEXT NOT NULL, part INTEGER NOT NULL, PRIMARY KEY (reply_id, part))"
    )
    return [(1, create), (2, sending)]


class SentParts:
    """`state_path`: the state database; `old_file`: delivered.sqlite3 of an earlier version, read once."""

    def __init__(self, state_path: Path, old_file: Path | None = None) -> None:
        self._conn = connect(state_path)
        apply_migrations(self._conn, OWNER, migrations(old_file))
        self._conn.execute("DELETE FROM telegram_sent_parts WHERE at < ?", (time.time() - _KEEP_S,))
        # One thread owns the connection: calls run in order there, and `close` runs after any call still in it
        # (a delivery cancelled at shutdown leaves its call running; closing beside it crashed the process).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confide-telegram-sent")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def parts(self, reply_id: str) -> dict[int, int]:
        rows = await self._run(
            lambda: self._conn.execute(
                "SELECT part, message_id FROM telegram_sent_parts WHERE reply_id = ?", (reply_id,)
            ).fetchall()
        )
        return {part: message_id for part, message_id in rows}

    async def begin(self, reply_id: str, part: int) -> bool:
        """This part goes to Telegram now; True if it went before and its outcome was never recorded."""

        def mark() -> bool:
            with self._conn:
                before = self._conn.execute(
                    "SELECT 1 FROM telegram_sending WHERE reply_id = ? AND part = ?", (reply_id, part)
                ).fetchone()
                self._conn.execute("INSERT OR IGNORE INTO telegram_sending VALUES (?, ?)", (reply_id, part))
            return before is not None

        return await self._run(mark)

    async def failed(self, reply_id: str, part: int) -> None:
        """Telegram answered with an error: the part was not sent, a retry is no doubt."""
        await self._run(lambda: self._forget_sending(reply_id, part))

    async def record(self, reply_id: str, part: int, message_id: int) -> None:
        def store() -> None:
            with self._conn:
                self._conn.execute(
                    "INSERT OR REPLACE INTO telegram_sent_parts VALUES (?, ?, ?, ?)",
                    (reply_id, part, message_id, time.time()),
                )
                self._forget_sending(reply_id, part)

        await self._run(store)

    def _forget_sending(self, reply_id: str, part: int) -> None:
        self._conn.execute("DELETE FROM telegram_sending WHERE reply_id = ? AND part = ?", (reply_id, part))

    def close(self) -> None:
        self._thread.submit(self._conn.close)
        self._thread.shutdown(wait=True)
