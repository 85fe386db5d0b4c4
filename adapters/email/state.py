"""The email adapter's own durable state: replies already sent, and the IMAP checkpoint.

Kept in the state database (tables `email_sent`, `email_sending` and `email_imap_checkpoint`, owner "email"
in its versions), so a retried `deliver` (after a failure reported too late, or a crash) does not send the same
reply twice, and the mailbox reader resumes where it stopped.
"""

from __future__ import annotations

import time

from bridge.state.store import Connection, Migration, PlatformState

# The same numbered steps as when this adapter kept its own connection, so a database it wrote keeps its rows.
MIGRATIONS: list[Migration] = [
    (
        1,
        "CREATE TABLE email_sent (reply_id TEXT PRIMARY KEY, message_id TEXT NOT NULL, sent_at REAL NOT NULL);"
        "CREATE TABLE email_imap_checkpoint (mailbox TEXT PRIMARY KEY, uidvalidity INTEGER NOT NULL,"
        " last_uid INTEGER NOT NULL, updated_at REAL NOT NULL)",
    ),
    # Version 2: a reply is recorded as being sent before the relay gets it. A stop between the relay's 250 and
    # the record of the send leaves it "in doubt": it is sent again (same Message-ID) and counted.
    (
        2,
        "CREATE TABLE email_sending (reply_id TEXT PRIMARY KEY, message_id TEXT NOT NULL, started_at REAL NOT NULL)",
    ),
]


class EmailState:
    """The email tables, through the `PlatformState` the core hands the adapter: each call is one transaction."""

    def __init__(self, state: PlatformState) -> None:
        self._state = state

    async def sent_message_id(self, reply_id: str) -> str | None:
        def query(conn: Connection) -> str | None:
            row = conn.execute("SELECT message_id FROM email_sent WHERE reply_id=?", (reply_id,)).fetchone()
            return str(row[0]) if row else None

        return await self._state.run(query)

    async def mark_sending(self, reply_id: str, message_id: str) -> bool:
        """Record that this reply goes to the relay now; True if it went before and its end was never recorded."""

        def record(conn: Connection) -> bool:
            before = conn.execute("SELECT 1 FROM email_sending WHERE reply_id=?", (reply_id,)).fetchone()
            conn.execute(
                "INSERT INTO email_sending (reply_id, message_id, started_at) VALUES (?, ?, ?) ON CONFLICT (reply_id)"
                " DO UPDATE SET message_id=excluded.message_id, started_at=excluded.started_at",
                (reply_id, message_id, time.time()),
            )
            return before is not None

        return await self._state.run(record)

    async def sending_failed(self, reply_id: str) -> None:
        """The relay refused it or could not be reached: not in doubt, a plain retry follows."""

        def forget(conn: Connection) -> None:
            conn.execute("DELETE FROM email_sending WHERE reply_id=?", (reply_id,))

        await self._state.run(forget)

    async def mark_sent(self, reply_id: str, message_id: str) -> None:
        def insert(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO email_sent (reply_id, message_id, sent_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (reply_id, message_id, time.time()),
            )
            conn.execute("DELETE FROM email_sending WHERE reply_id=?", (reply_id,))

        await self._state.run(insert)

    async def checkpoint(self, mailbox: str) -> tuple[int, int] | None:
        """(UIDVALIDITY, last UID handed to the inbox) of a mailbox, or None before its first mail."""

        def query(conn: Connection) -> tuple[int, int] | None:
            row = conn.execute(
                "SELECT uidvalidity, last_uid FROM email_imap_checkpoint WHERE mailbox=?", (mailbox,)
            ).fetchone()
            return (int(row[0]), int(row[1])) if row else None

        return await self._state.run(query)

    async def save_checkpoint(self, mailbox: str, uidvalidity: int, last_uid: int) -> None:
        def upsert(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO email_imap_checkpoint (mailbox, uidvalidity, last_uid, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (mailbox) DO UPDATE SET uidvalidity=excluded.uidvalidity,"
                " last_uid=excluded.last_uid, updated_at=excluded.updated_at",
                (mailbox, uidvalidity, last_uid, time.time()),
            )

        await self._state.run(upsert)
