"""The state database: one SQLite file in WAL mode, used from one dedicated thread.

Everything durable that is not history lives here: inbox, outbox, drafts, chat turns, chat settings,
pending confirmations, checkpoints. Callers pass a function that runs inside a transaction on the
database thread, so the event loop never waits on disk and writes are naturally serialized.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    platform_message_id TEXT NOT NULL,
    chat_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',   -- pending | working | done
    outcome TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    finished_at REAL,
    UNIQUE (channel, platform_message_id)
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (status, chat_key, id);

CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reply_id TEXT NOT NULL UNIQUE,
    inbox_id INTEGER,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',   -- pending | sent | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    receipt TEXT,
    created_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, channel, id);

CREATE TABLE IF NOT EXISTS drafts (
    inbox_id INTEGER PRIMARY KEY,
    edit_token TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_key TEXT NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_chat ON turns (chat_key, id);

CREATE TABLE IF NOT EXISTS chat_state (
    chat_key TEXT PRIMARY KEY,
    model TEXT,
    last_sources TEXT,
    pending_action TEXT,
    pending_expires REAL
);

-- One row per model answer, written in the transaction that finishes its message (for /usage).
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    inbox_id INTEGER NOT NULL,
    person TEXT NOT NULL,
    model TEXT NOT NULL,
    day TEXT NOT NULL,                        -- UTC date, YYYY-MM-DD
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    energy_wh REAL,                           -- NULL: not measured
    ttft_s REAL,
    total_s REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_person_day ON usage (person, day, model);

CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


class StateDB:
    """SQLite behind a single worker thread; `run(fn)` executes fn(conn) inside one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confide-state")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._submit(self._open_sync)

    def _open_sync(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a reply or an accepted message is on disk before we acknowledge anything.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.executescript(SCHEMA)
        conn.row_factory = sqlite3.Row
        self._conn = conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(lambda: self._in_transaction(fn))

    def _in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError("state database is not open")
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def _submit(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)
