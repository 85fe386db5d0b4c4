"""The state store as the rest of Confide sees it, whichever database holds it.

Two backends implement `StateStore`: SQLite (bridge/state/db.py), the embedded default for a household, and
PostgreSQL (bridge/state/postgres.py), for many processes on many machines. Callers hand `run` a function of a
`Connection` that runs inside one transaction; they write SQL both databases read (`?` placeholders, `ON CONFLICT`
upserts, `RETURNING`), and the PostgreSQL connection translates the placeholders.

Each owner's tables (the core's, a platform's) have a version in `schema_versions`, brought forward by one ordered
list of migrations run on either backend: version N is the N-th entry, and each runs in one transaction together
with its version bump, so a crash leaves the old or the new version.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What a function given to `run` may use: rows read by index or by column name."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


# (version, SQL script or function of the connection); versions run 1, 2, 3... in the owner's list. A script's
# column types are SQLite's names; the PostgreSQL backend reads INTEGER as BIGINT, REAL as DOUBLE PRECISION and
# INTEGER PRIMARY KEY AUTOINCREMENT as an identity column.
Migration = tuple[int, str | Callable[[Connection], None]]


class SchemaTooNew(RuntimeError):
    """The database holds tables of a newer version than this code knows; nothing was changed."""


class StateStore(Protocol):
    """Everything durable that is not history: inbox, outbox, drafts, chat turns and settings, confirmations,
    usage, and the platforms' own tables."""

    dialect: str  # "sqlite" or "postgresql": the few statements that differ (row locks, NOTIFY)

    async def open(self) -> None: ...

    async def run(self, fn: Callable[[Connection], T]) -> T: ...

    async def migrate(self, owner: str, migrations: Sequence[Migration]) -> int: ...

    async def platform_state(self, owner: str, migrations: Sequence[Migration]) -> PlatformState: ...

    async def listen(self, channel: str, heard: Callable[[], None]) -> None:
        """Call `heard` whenever another process's transaction NOTIFYs `channel`, until cancelled."""
        ...

    async def close(self) -> None: ...


class PlatformState:
    """One platform's tables in the state store, as the core hands them to its adapter.

    Each `run` is one transaction of its own: committed if fn returns, undone whole if it raises, so a record and
    the mark it clears never part.
    """

    def __init__(self, store: StateStore, owner: str) -> None:
        self._store = store
        self.owner = owner

    async def run(self, fn: Callable[[Connection], T]) -> T:
        return await self._store.run(fn)


def check_numbered(owner: str, migrations: Sequence[Migration]) -> int:
    latest = len(migrations)
    if [version for version, _ in migrations] != list(range(1, latest + 1)):
        raise ValueError(f"{owner} migrations must be numbered 1, 2, 3... in order")
    return latest


def next_migration(
    conn: Connection, owner: str, migrations: Sequence[Migration], run_script: Callable[[Connection, str], None]
) -> bool:
    """Apply the owner's next migration with its version bump, inside the caller's transaction; False when there is
    none left. The version is read inside that transaction, so several processes may call this at once."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_versions (owner TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_versions WHERE owner=?", (owner,)).fetchone()
    current = int(row[0]) if row else 0
    latest = len(migrations)
    if current > latest:
        raise SchemaTooNew(
            f"state database was written by a newer Confide ({owner} schema {current}, this version knows "
            f"{latest}). Nothing was changed: run that newer version, or restore a backup of the data directory."
        )
    if current == latest:
        return False
    version, change = migrations[current]
    if isinstance(change, str):
        run_script(conn, change)
    else:
        change(conn)
    conn.execute(
        "INSERT INTO schema_versions (owner, version) VALUES (?, ?) ON CONFLICT (owner) DO UPDATE SET version=?",
        (owner, version, version),
    )
    return True


def clock(conn: Connection, dialect: str) -> float:
    """The time leases are judged by: the database's own where processes on several machines share it (their clocks
    may disagree by more than a lease), this machine's for a SQLite file."""
    if dialect == "postgresql":
        return float(conn.execute("SELECT extract(epoch from clock_timestamp())").fetchone()[0])
    return time.time()
