"""The SQLite backend of the state store: one file in WAL mode, used from one dedicated thread.

The embedded default (a household's Confide). Callers pass a function that runs inside a transaction on the
database thread, so the event loop never waits on disk and writes are naturally serialized. A platform's adapter
opens no connection of its own: at assembly the core brings the platform's tables to their last migration and hands
the adapter a `PlatformState` over this one (bridge/app.py). What is common to both backends (the connection a
function gets, migrations and their versions) is bridge/state/store.py's; PostgreSQL is bridge/state/postgres.py.

The core's version 1 is the layout that was created with `CREATE TABLE IF NOT EXISTS` before versions existed, so
such a database simply counts as version 0.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from bridge.state.schema import CORE, CORE_MIGRATIONS
from bridge.state.store import (
    Connection,
    Migration,
    PlatformState,
    check_numbered,
    next_migration,
)

T = TypeVar("T")


class StateDamaged(RuntimeError):
    """The state database file is damaged (cut short, overwritten); nothing was changed."""


def damaged(path: Path, exc: sqlite3.DatabaseError) -> StateDamaged:
    return StateDamaged(
        f"the state database {path} is damaged ({exc}). It holds the queue of messages and replies, chat memory and "
        "usage; the history itself is in the index and is not affected. Restore it from a backup of the data "
        f"directory, or move it away to start with an empty queue:  mv {path} {path}.damaged  (and its -wal and "
        "-shm files beside it, if any). Nothing was changed."
    )


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the state database: WAL, synchronous=FULL, transactions only where asked for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a reply or an accepted message is on disk before we acknowledge anything.
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def transaction(conn: sqlite3.Connection, fn: Callable[[Connection], T]) -> T:
    """fn(conn) inside one BEGIN IMMEDIATE transaction: committed if it returns, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def schema_version(conn: Connection, owner: str) -> int:
    """The version of the owner's tables; 0 before its first migration."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_versions'").fetchone():
        return 0
    row = conn.execute("SELECT version FROM schema_versions WHERE owner=?", (owner,)).fetchone()
    return int(row[0]) if row else 0


def apply_migrations(conn: sqlite3.Connection, owner: str, migrations: Sequence[Migration]) -> int:
    """Bring the owner's tables to the last version of `migrations`, each step in its own transaction.

    Safe to call from several connections or processes at once: the version is read inside the
    transaction that applies the next step. Returns the version reached.
    """
    latest = check_numbered(owner, migrations)
    while transaction(conn, lambda conn: next_migration(conn, owner, migrations, _execute_script)):
        pass
    return latest


# Calls in one group commit at most: a bound on how long the first of them waits for the others.
MAX_GROUP = 256


@dataclass
class _Call(Generic[T]):
    fn: Callable[[Connection], T]
    future: asyncio.Future[T]

    def settle(self, result: T, error: BaseException | None) -> None:
        if self.future.done():  # its caller was cancelled; the work itself is done (or rolled back)
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


def _settle_all(outcomes: list[tuple[_Call[Any], Any, BaseException | None]]) -> None:
    for call, result, error in outcomes:
        call.settle(result, error)


def _in_savepoint(conn: sqlite3.Connection, fn: Callable[[Connection], T]) -> tuple[T | None, Exception | None]:
    """fn(conn) undone alone if it raises, so one caller's failure never takes the group's work with it."""
    conn.execute("SAVEPOINT call")
    try:
        result = fn(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO call")
        conn.execute("RELEASE call")
        return None, exc
    conn.execute("RELEASE call")
    return result, None


def _execute_script(conn: Connection, script: str) -> None:
    # Statement by statement: executescript() would commit the open transaction first.
    statement = ""
    for part in script.split(";"):
        statement += part + ";"
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""


class StateDB:
    """SQLite behind a single worker thread; `run(fn)` executes fn(conn) atomically and durably.

    Group commit: every `run` waiting while the thread is busy joins the next transaction, each in its own
    savepoint (a failing one is rolled back alone), and all of them are answered only after the one COMMIT
    is on disk. With synchronous=FULL a commit costs an fsync (several ms), so one per message step would cap
    the whole bridge at a few dozen messages a second; one per group keeps every guarantee at a fraction.
    """

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confide-state")
        self._conn: sqlite3.Connection | None = None
        self._waiting: list[_Call[Any]] = []
        self._lock = threading.Lock()

    async def open(self) -> None:
        """Open the file (created if missing) and bring the core tables to this version's schema."""
        await self._submit(self._open_sync)

    def _open_sync(self) -> None:
        try:
            conn = connect(self.path)
        except sqlite3.DatabaseError as exc:
            raise damaged(self.path, exc) from None
        try:
            # A damaged file is said now, in words, rather than found in the middle of an answer.
            problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            apply_migrations(conn, CORE, CORE_MIGRATIONS)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise damaged(self.path, exc) from None
        except BaseException:
            conn.close()
            raise
        conn.row_factory = sqlite3.Row
        self._conn = conn

    async def migrate(self, owner: str, migrations: Sequence[Migration]) -> int:
        """Bring an adapter's own tables (named `<owner>_...`) to the last of its migrations."""
        return await self._submit(lambda: apply_migrations(self._open_conn(), owner, migrations))

    async def platform_state(self, owner: str, migrations: Sequence[Migration]) -> PlatformState:
        """A platform's handle on its own tables, brought to the last of its migrations first."""
        await self.migrate(owner, migrations)
        return PlatformState(self, owner)

    async def listen(self, channel: str, heard: Callable[[], None]) -> None:
        """One process per SQLite file (the data directory's lock): no other process says anything."""
        await asyncio.Event().wait()

    async def run(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        call: _Call[T] = _Call(fn, loop.create_future())
        with self._lock:
            self._waiting.append(call)
            first = len(self._waiting) == 1
        if first:  # the group's flush takes everything that is waiting when it starts
            self._executor.submit(self._flush, loop)
        return await call.future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            if self._waiting:
                self._executor.submit(self._flush, loop)
        outcomes: list[tuple[_Call[Any], Any, BaseException | None]] = []
        try:
            conn = self._open_conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = [(call, *_in_savepoint(conn, call.fn)) for call in group]
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException as exc:  # nothing of the group is on disk: each caller learns why
            outcomes = [(call, None, exc) for call in group]
        loop.call_soon_threadsafe(_settle_all, outcomes)  # one wake-up of the loop for the whole group

    def _open_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("state database is not open")
        return self._conn

    async def _submit(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)
