"""Which parts of which reply Telegram already took, so a redelivered reply sends nothing twice.

Telegram has no idempotency key: the outbox retries a reply whose delivery raised (say, part 2 of 2
failed) or whose receipt was not recorded before a crash. Each part is written here as soon as
Telegram returned its message id, so a retry continues with the first part not yet sent.

The rows live in the state database (table `telegram_sent_parts`, owner "telegram" in its versions), reached
through the `PlatformState` the core hands the adapter; each call below is one transaction.
"""

from __future__ import annotations

import time

from bridge.state.store import Connection, Migration, PlatformState

_KEEP_S = 30 * 24 * 3600  # the outbox gives up long before this

# The same numbered steps as when this adapter kept its own connection, so a database it wrote keeps its rows.
MIGRATIONS: list[Migration] = [
    (
        1,
        "CREATE TABLE telegram_sent_parts (reply_id TEXT NOT NULL, part INTEGER NOT NULL, "
        "message_id INTEGER NOT NULL, at REAL NOT NULL, PRIMARY KEY (reply_id, part))",
    ),
    # Version 2: a part is recorded as being sent before the call. A stop after Telegram took it and before its
    # message id was recorded leaves it "in doubt": sent again and counted (the Bot API cannot list a chat).
    (
        2,
        "CREATE TABLE telegram_sending (reply_id TEXT NOT NULL, part INTEGER NOT NULL, PRIMARY KEY (reply_id, part))",
    ),
]


class SentParts:
    def __init__(self, state: PlatformState) -> None:
        self._state = state

    async def forget_old(self) -> None:
        """Drop the records of replies too old for the outbox to retry."""

        def prune(conn: Connection) -> None:
            conn.execute("DELETE FROM telegram_sent_parts WHERE at < ?", (time.time() - _KEEP_S,))

        await self._state.run(prune)

    async def parts(self, reply_id: str) -> dict[int, int]:
        def query(conn: Connection) -> dict[int, int]:
            rows = conn.execute("SELECT part, message_id FROM telegram_sent_parts WHERE reply_id = ?", (reply_id,))
            return {int(part): int(message_id) for part, message_id in rows}

        return await self._state.run(query)

    async def begin(self, reply_id: str, part: int) -> bool:
        """This part goes to Telegram now; True if it went before and its outcome was never recorded."""

        def mark(conn: Connection) -> bool:
            before = conn.execute(
                "SELECT 1 FROM telegram_sending WHERE reply_id = ? AND part = ?", (reply_id, part)
            ).fetchone()
            conn.execute("INSERT INTO telegram_sending VALUES (?, ?) ON CONFLICT DO NOTHING", (reply_id, part))
            return before is not None

        return await self._state.run(mark)

    async def failed(self, reply_id: str, part: int) -> None:
        """Telegram answered with an error: the part was not sent, a retry is no doubt."""
        await self._state.run(lambda conn: _forget_sending(conn, reply_id, part))

    async def record(self, reply_id: str, part: int, message_id: int) -> None:
        """Telegram took the part: its id is kept and its sending mark cleared, both or neither."""

        def store(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO telegram_sent_parts VALUES (?, ?, ?, ?) ON CONFLICT (reply_id, part)"
                " DO UPDATE SET message_id=excluded.message_id, at=excluded.at",
                (reply_id, part, message_id, time.time()),
            )
            _forget_sending(conn, reply_id, part)

        await self._state.run(store)


def _forget_sending(conn: Connection, reply_id: str, part: int) -> None:
    conn.execute("DELETE FROM telegram_sending WHERE reply_id = ? AND part = ?", (reply_id, part))
