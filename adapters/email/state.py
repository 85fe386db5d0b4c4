"""The email adapter's own durable state: replies already sent, and the IMAP checkpoint.

One small SQLite file under DATA_DIR/email, so a retried `deliver` (after a failure reported too late, or
a crash) does not send the same reply twice, and the mailbox reader resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (reply_id TEXT PRIMARY KEY, message_id TEXT NOT NULL, sent_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS imap_checkpoint (
    mailbox TEXT PRIMARY KEY, uidvalidity INTEGER NOT NULL, last_uid INTEGER NOT NULL, updated_at REAL NOT NULL
);
"""


class EmailState:
    def __init__(self, folder: Path) -> None:
        self.path = folder / "email.sqlite3"

    def _connect(self) -> sqlite3.Connection:
        # A connection per call: calls are rare (one per mail), and nothing is left open after a crash.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        return conn

    async def sent_message_id(self, reply_id: str) -> str | None:
        def query() -> str | None:
            with closing(self._connect()) as conn:
                row = conn.execute("SELECT message_id FROM sent WHERE reply_id=?", (reply_id,)).fetchone()
                return row[0] if row else None

        return await asyncio.to_thread(query)

    async def mark_sent(self, reply_id: str, message_id: str) -> None:
        def insert() -> None:
            with closing(self._connect()) as conn, conn:
                conn.execute(
                    "INSERT OR IGNORE INTO sent (reply_id, message_id, sent_at) VALUES (?, ?, ?)",
                    (reply_id, message_id, time.time()),
                )

        await asyncio.to_thread(insert)

    async def checkpoint(self, mailbox: str) -> tuple[int, int] | None:
        """(UIDVALIDITY, last UID handed to the inbox) of a mailbox, or None before its first mail."""

        def query() -> tuple[int, int] | None:
            with closing(self._connect()) as conn:
                row = conn.execute(
                    "SELECT uidvalidity, last_uid FROM imap_checkpoint WHERE mailbox=?", (mailbox,)
                ).fetchone()
                return (row[0], row[1]) if row else None

        return await asyncio.to_thread(query)

    async def save_checkpoint(self, mailbox: str, uidvalidity: int, last_uid: int) -> None:
        def upsert() -> None:
            with closing(self._connect()) as conn, conn:
                conn.execute(
                    "INSERT INTO imap_checkpoint (mailbox, uidvalidity, last_uid, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (mailbox) DO UPDATE SET uidvalidity=excluded.uidvalidity,"
                    " last_uid=excluded.last_uid, updated_at=excluded.updated_at",
                    (mailbox, uidvalidity, last_uid, time.time()),
                )

        await asyncio.to_thread(upsert)
