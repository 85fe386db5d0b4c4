"""The email adapter's own durable state: replies already sent, and the IMAP checkpoint.

Kept in the state database (tables `email_sent` and `email_imap_checkpoint`, owner "email" in its
versions), so a retried `deliver` (after a failure reported too late, or a crash) does not send the same
reply twice, and the mailbox reader resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

from bridge.state import Migration, apply_migrations, connect, old_rows, transaction

T = TypeVar("T")
OWNER = "email"


def migrations(old_file: Path | None = None) -> list[Migration]:
    """This adapter's tables; version 1 takes over the rows of email.sqlite3, where earlier versions kept them."""

    def create(conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE email_sent (reply_id TEXT PRIMARY KEY, message_id TEXT NOT NULL, sent_at REAL NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE email_imap_checkpoint (mailbox TEXT PRIMARY KEY, uidvalidity INTEGER NOT NULL,"
            " last_uid INTEGER NOT NULL, updated_at REAL NOT NULL)"
        )
        sent = old_rows(old_file, "SELECT reply_id, message_id, sent_at FROM sent")
        conn.executemany("INSERT INTO email_sent VALUES (?, ?, ?)", sent)
        checkpoints = old_rows(old_file, "SELECT mailbox, uidvalidity, last_uid, updated_at FROM imap_checkpoint")
        conn.executemany("INSERT INTO email_imap_checkpoint VALUES (?, ?, ?, ?)", checkpoints)

    # Version 2: a reply is recorded as being sent before the relay gets it. A stop between the relay's 250 and
    # the record of the send leaves it "in doubt": it is sent again (same Message-ID) and counted.
    sending = (
        "CREATE TABLE email_sending (reply_id TEXT PRIMARY KEY, message_id TEXT NOT NULL, started_at REAL NOT NULL)"
    )
    return [(1, create), (2, sending)]


class EmailState:
    """`state_path`: the state database; `old_file`: email.sqlite3 of an earlier version, read once."""

    def __init__(self, state_path: Path, old_file: Path | None = None) -> None:
        self.path = state_path
        self._migrations = migrations(old_file)
        self._migrated = False

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # A connection per call: calls are rare (one per mail), and nothing is left open after a crash.
        with closing(connect(self.path)) as conn:
            if not self._migrated:
                apply_migrations(conn, OWNER, self._migrations)
                self._migrated = True
            return transaction(conn, fn)

    async def sent_message_id(self, reply_id: str) -> str | None:
        def query(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT message_id FROM email_sent WHERE reply_id=?", (reply_id,)).fetchone()
            return str(row[0]) if row else None

        return await asyncio.to_thread(self._run, query)

    async def mark_sending(self, reply_id: str, message_id: str) -> bool:
        """Record that this reply goes to the relay now; True if it went before and its end was never recorded."""

        def record(conn: sqlite3.Connection) -> bool:
            before = conn.execute("SELECT 1 FROM email_sending WHERE reply_id=?", (reply_id,)).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO email_sending (reply_id, message_id, started_at) VALUES (?, ?, ?)",
                (reply_id, message_id, time.time()),
            )
            return before is not None

        return await asyncio.to_thread(self._run, record)

    async def sending_failed(self, reply_id: str) -> None:
        """The relay refused it or could not be reached: not in doubt, a plain retry follows."""
        await asyncio.to_thread(
            self._run, lambda conn: conn.execute("DELETE FROM email_sending WHERE reply_id=?", (reply_id,))
        )

    async def mark_sent(self, reply_id: str, message_id: str) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO email_sent (reply_id, message_id, sent_at) VALUES (?, ?, ?)",
                (reply_id, message_id, time.time()),
            )
            conn.execute("DELETE FROM email_sending WHERE reply_id=?", (reply_id,))

        await asyncio.to_thread(self._run, insert)

    async def checkpoint(self, mailbox: str) -> tuple[int, int] | None:
        """(UIDVALIDITY, last UID handed to the inbox) of a mailbox, or None before its first mail."""

        def query(conn: sqlite3.Connection) -> tuple[int, int] | None:
            row = conn.execute(
                "SELECT uidvalidity, last_uid FROM email_imap_checkpoint WHERE mailbox=?", (mailbox,)
            ).fetchone()
            return (int(row[0]), int(row[1])) if row else None

        return await asyncio.to_thread(self._run, query)

    async def save_checkpoint(self, mailbox: str, uidvalidity: int, last_uid: int) -> None:
        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO email_imap_checkpoint (mailbox, uidvalidity, last_uid, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (mailbox) DO UPDATE SET uidvalidity=excluded.uidvalidity,"
                " last_uid=excluded.last_uid, updated_at=excluded.updated_at",
                (mailbox, uidvalidity, last_uid, time.time()),
            )

        await asyncio.to_thread(self._run, upsert)
