"""The state database: one SQLite file in WAL mode, used from one dedicated thread.

Everything durable that is not history lives here: inbox, outbox, drafts, chat turns, chat settings,
pending confirmations, usage, and the platforms' own tables (named after their owner: `telegram_...`,
`email_...`). Callers pass a function that runs inside a transaction on the database thread, so the event
loop never waits on disk and writes are naturally serialized. A platform's adapter opens no connection of its
own: at assembly the core brings the platform's tables to their last migration and hands the adapter a
`PlatformState` over this one (bridge/app.py).

Each owner's tables have a version in `schema_versions`, brought forward by an ordered list of migrations:
version N is the N-th entry, and each runs in one transaction together with its version bump, so a crash
leaves the old or the new version. The core's version 1 is the layout that was created with
`CREATE TABLE IF NOT EXISTS` before versions existed, so such a database simply counts as version 0.
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

T = TypeVar("T")

# (version, SQL script or function of the connection); versions run 1, 2, 3... in the owner's list.
Migration = tuple[int, str | Callable[[sqlite3.Connection], None]]

CORE = "core"
CORE_MIGRATIONS: list[Migration] = [
    (
        1,
        """
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
""",
    ),
    (2, "DROP TABLE IF EXISTS checkpoints;  -- created by version 1's predecessor, never used"),
    (
        3,
        """
-- Whose own history a group's answers may use: each row one person's explicit /share in that chat.
CREATE TABLE room_shares (
    chat_key TEXT NOT NULL,
    person TEXT NOT NULL,
    shared_at REAL NOT NULL,
    PRIMARY KEY (chat_key, person)
);
""",
    ),
    (
        4,
        """
-- Failures of a message's handling, apart from `attempts` (how often it was started): a stop or a crash
-- that interrupts an answer is no failure of that message and must not use up its retries.
ALTER TABLE inbox ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
""",
    ),
    (
        5,
        """
-- Answers owed (bridge/dispatch/reanswer.py): a question that got the fallback because its model was down.
CREATE TABLE fallbacks (
    inbox_id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    created_at REAL NOT NULL,
    answered_at REAL
);
""",
    ),
    (
        6,
        """
-- 1 once a taken message is really at work (its model request sent, its command running). From here on
-- `attempts` counts the restarts that found a message at work, not every claim: a message that only waited
-- for a model slot while the process was stopped has not crashed anything and must not be given up for it.
ALTER TABLE inbox ADD COLUMN at_work INTEGER NOT NULL DEFAULT 0;
-- Until now `attempts` counted claims; unfinished messages start over with none held against them.
UPDATE inbox SET attempts=0 WHERE status!='done';
""",
    ),
    (
        7,
        """
-- The language this person last wrote in here (ISO 639-1), told from a message long enough to tell: the reply to
-- one too short to tell ("ok", "/help", a voice message) is in it, where the person's setting names none.
ALTER TABLE chat_state ADD COLUMN language TEXT;
""",
    ),
]


class SchemaTooNew(RuntimeError):
    """The database holds tables of a newer version than this code knows; nothing was changed."""


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


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """fn(conn) inside one BEGIN IMMEDIATE transaction: committed if it returns, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def schema_version(conn: sqlite3.Connection, owner: str) -> int:
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
    latest = len(migrations)
    if [version for version, _ in migrations] != list(range(1, latest + 1)):
        raise ValueError(f"{owner} migrations must be numbered 1, 2, 3... in order")

    def next_step(conn: sqlite3.Connection) -> bool:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_versions (owner TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        current = schema_version(conn, owner)
        if current > latest:
            raise SchemaTooNew(
                f"state database was written by a newer Confide ({owner} schema {current}, this version knows "
                f"{latest}). Nothing was changed: run that newer version, or restore a backup of the data directory."
            )
        if current == latest:
            return False
        version, change = migrations[current]
        if isinstance(change, str):
            _execute_script(conn, change)
        else:
            change(conn)
        conn.execute(
            "INSERT INTO schema_versions (owner, version) VALUES (?, ?)"
            " ON CONFLICT (owner) DO UPDATE SET version=excluded.version",
            (owner, version),
        )
        return True

    while transaction(conn, next_step):
        pass
    return latest


# Calls in one group commit at most: a bound on how long the first of them waits for the others.
MAX_GROUP = 256


@dataclass
class _Call(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
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


def _in_savepoint(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> tuple[T | None, Exception | None]:
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


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
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

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
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


class PlatformState:
    """One platform's tables in the state database, as the core hands them to its adapter.

    Each `run` is one transaction of its own (a savepoint in the core's group commit): committed if fn returns,
    undone whole if it raises, so a record and the mark it clears never part.
    """

    def __init__(self, db: StateDB, owner: str) -> None:
        self._db = db
        self.owner = owner

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(fn)
