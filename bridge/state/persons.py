"""Who may talk to Confide, kept in the state store: `confide persons add|remove` changes it while Confide runs.

CONFIDE_PERSONS seeds it: at start, a person it names that the store does not know is added; one the store knows
keeps what the store says (it was changed with `confide persons`), and one removed with `confide persons remove`
stays removed. Running processes follow every change within seconds (`PersonsWatch`): at once on PostgreSQL
(NOTIFY), by a look every two seconds on SQLite.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence

from bridge.config import PersonSettings
from bridge.state.store import Connection, StateStore

log = logging.getLogger(__name__)
NOTIFY_CHANNEL = "confide_persons"
LOOK_EVERY_S = 2.0


class AccountTaken(ValueError):
    """An account can belong to one person only."""


class PersonStore:
    def __init__(self, db: StateStore) -> None:
        self._db = db

    async def seed(self, persons: Sequence[PersonSettings]) -> list[str]:
        """Add the persons of the settings that the store has never known; returns their ids."""

        def add(conn: Connection) -> list[str]:
            known = {row[0] for row in conn.execute("SELECT id FROM persons").fetchall()}
            added = []
            for person in persons:
                if person.id in known:
                    continue
                _check_accounts(conn, person)
                # Processes that start together (a fresh deployment) seed at once: one of them adds each person.
                cursor = conn.execute(
                    "INSERT INTO persons (id, settings, updated_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (person.id, person.model_dump_json(), time.time()),
                )
                if cursor.rowcount == 1:
                    added.append(person.id)
            return added

        return await self._db.run(add)

    async def all(self) -> list[PersonSettings]:
        def read(conn: Connection) -> list[PersonSettings]:
            rows = conn.execute("SELECT settings FROM persons WHERE removed=0 ORDER BY id").fetchall()
            return [PersonSettings.model_validate_json(row[0]) for row in rows]

        return await self._db.run(read)

    async def get(self, person_id: str) -> PersonSettings | None:
        return next((p for p in await self.all() if p.id == person_id), None)

    async def put(self, person: PersonSettings) -> bool:
        """Add a person, or replace one of that id (a removed one comes back); True if it is new. AccountTaken when
        another person has one of its accounts."""

        def write(conn: Connection) -> bool:
            _check_accounts(conn, person)
            before = conn.execute("SELECT removed FROM persons WHERE id=?", (person.id,)).fetchone()
            conn.execute(
                "INSERT INTO persons (id, settings, removed, updated_at) VALUES (?, ?, 0, ?) ON CONFLICT (id)"
                " DO UPDATE SET settings=excluded.settings, removed=0, updated_at=excluded.updated_at",
                (person.id, person.model_dump_json(), time.time()),
            )
            self._notify(conn)
            return before is None or bool(before[0])

        return await self._db.run(write)

    async def remove(self, person_id: str) -> bool:
        """Remove a person: their messages are no longer answered. False if there was none of that id."""

        def write(conn: Connection) -> bool:
            cursor = conn.execute("UPDATE persons SET removed=1, updated_at=? WHERE id=? AND removed=0",
                                  (time.time(), person_id))  # fmt: skip
            # Their /share in groups ends with them: a group's answers no longer read their history.
            conn.execute("DELETE FROM room_shares WHERE person=?", (person_id,))
            self._notify(conn)
            return cursor.rowcount == 1

        return await self._db.run(write)

    async def version(self) -> tuple[int, float]:
        """Changes to the persons: (how many rows, the latest change); it moves whenever anything changes."""

        def read(conn: Connection) -> tuple[int, float]:
            count, latest = conn.execute("SELECT COUNT(*), MAX(updated_at) FROM persons").fetchone()
            return int(count), float(latest or 0.0)

        return await self._db.run(read)

    def _notify(self, conn: Connection) -> None:
        if self._db.dialect == "postgresql":  # sent at commit, to every running process
            conn.execute("SELECT pg_notify(?, '')", (NOTIFY_CHANNEL,))

    async def watch(self, changed: Callable[[list[PersonSettings]], None]) -> None:
        """Until cancelled, call `changed` with the persons whenever they change, and once at the start (they may
        have changed since the caller read them). Told by NOTIFY, it reads them again whatever the version says."""
        seen: tuple[int, float] | None = None
        wake = asyncio.Event()
        wake.set()
        listening = asyncio.create_task(self._db.listen(NOTIFY_CHANNEL, wake.set), name="confide-persons-listen")
        try:
            while True:
                try:
                    await asyncio.wait_for(wake.wait(), LOOK_EVERY_S)
                except TimeoutError:
                    pass
                told, seen_before = wake.is_set(), seen
                wake.clear()
                try:
                    seen = await self.version()
                    if told or seen != seen_before:
                        persons = await self.all()
                        log.info("persons: %s", ", ".join(p.id for p in persons) or "none")
                        changed(persons)
                except Exception:
                    log.exception("reading the persons from the state store failed; trying again")
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)


def _check_accounts(conn: Connection, person: PersonSettings) -> None:
    rows = conn.execute("SELECT id, settings FROM persons WHERE removed=0 AND id != ?", (person.id,)).fetchall()
    for other, settings in rows:
        shared = set(json.loads(settings)["accounts"]) & set(person.accounts)
        if shared:
            raise AccountTaken(f"{', '.join(sorted(shared))} already belongs to {other!r}; remove it there first")
