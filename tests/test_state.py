"""The state store's contract, on both backends (a real SQLite file, a real PostgreSQL server): the durable inbox
and outbox, migrations and their versions, the platforms' tables; and what only the SQLite file has (its layout
before versions, group commit)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

import bridge.app
from adapters.email.state import MIGRATIONS as EMAIL_MIGRATIONS
from adapters.email.state import EmailState
from adapters.telegram.sent import MIGRATIONS as TELEGRAM_MIGRATIONS
from adapters.telegram.sent import SentParts
from bridge.dispatch.inbox import Inbox
from bridge.dispatch.outbox import Outbox
from bridge.history.index import HistoryIndex
from bridge.intake.adapter import InboxPort
from bridge.intake.platforms import Platform
from bridge.messages import IncomingMessage, OutgoingReply
from bridge.ops.metrics import Metrics
from bridge.state.db import StateDB, apply_migrations, connect, schema_version
from bridge.state.postgres import PostgresState
from bridge.state.schema import CORE_MIGRATIONS
from bridge.state.store import Connection, Migration, PlatformState, SchemaTooNew, StateStore
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.recording_adapter import RecordingAdapter
from tests.harness import Harness
from tests.helpers import eventually, make_settings, model_for


def message(pid: str, chat: str = "c1", text: str = "hi") -> IncomingMessage:
    return IncomingMessage(channel="telegram", chat_id=chat, sender="100", platform_message_id=pid, text=text)


def reply(rid: str) -> OutgoingReply:
    return OutgoingReply(reply_id=rid, channel="telegram", chat_id="c1", text="answer")


async def open_db(path: Path) -> StateDB:
    db = StateDB(path / "state.sqlite3")
    await db.open()
    return db


@dataclass
class Backend:
    """Where a test's state lives: opened again after a close, as a restarted process opens it."""

    kind: str
    path: Path
    url: str | None = None

    async def open(self) -> StateStore:
        db: StateStore = StateDB(self.path / "state.sqlite3") if self.url is None else PostgresState(self.url)
        await db.open()
        return db


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path)
    return Backend("postgresql", tmp_path, request.getfixturevalue("state_url"))


LEASE_S = 0.3  # a dead process's leases run out this soon in the tests of restarts


async def died(db: StateStore) -> None:
    """The process holding `db` is gone: its leases run out (on PostgreSQL another process waits for that; a
    SQLite file belongs to one process, whose next start takes everything back at once)."""
    await db.close()
    await asyncio.sleep(LEASE_S)


def columns(conn: Connection, table: str) -> list[str]:
    """A table's columns, read the same way on both backends (from a row's names)."""
    row = conn.execute(f"SELECT * FROM {table}").fetchone()
    return list(row.keys())


async def test_put_is_idempotent_on_channel_and_platform_id(backend: Backend) -> None:
    db = await backend.open()
    inbox = Inbox(db)
    assert await inbox.put(message("1")) is True
    assert await inbox.put(message("1", text="redelivered")) is False
    other_channel = message("1").model_copy(update={"channel": "matrix"})
    assert await inbox.put(other_channel) is True
    assert await inbox.unfinished() == 2
    claimed = await inbox.claim_next("telegram:c1")
    assert claimed is not None and claimed.message.text == "hi"
    await db.close()


async def test_messages_of_a_chat_come_in_order_and_chats_are_separate(backend: Backend) -> None:
    db = await backend.open()
    inbox = Inbox(db)
    for pid, chat in [("1", "a"), ("2", "b"), ("3", "a"), ("4", "b")]:
        await inbox.put(message(pid, chat))
    assert await inbox.pending_chats(exclude=set()) == ["telegram:a", "telegram:b"]
    assert await inbox.pending_chats(exclude={"telegram:a"}) == ["telegram:b"]
    first = await inbox.claim_next("telegram:a")
    assert first is not None and first.message.platform_message_id == "1"
    await inbox.finish(first.inbox_id, "answered", [])
    second = await inbox.claim_next("telegram:a")
    assert second is not None and second.message.platform_message_id == "3"
    await db.close()


async def test_unfinished_work_survives_a_restart(backend: Backend) -> None:
    db = await backend.open()
    inbox = Inbox(db, lease_s=LEASE_S)
    await inbox.put(message("1"))
    claimed = await inbox.claim_next("telegram:c1")
    assert claimed is not None and claimed.interrupted == 0
    await inbox.at_work(claimed.inbox_id)
    await died(db)  # the process dies while working on it

    db = await backend.open()
    inbox = Inbox(db, lease_s=LEASE_S)
    assert await inbox.recover() == 1
    again = await inbox.claim_next("telegram:c1")
    assert again is not None and again.inbox_id == claimed.inbox_id and again.interrupted == 1
    assert again.failures == 0, "an interrupted attempt was counted as a failure"
    assert await inbox.failed(again.inbox_id) == 1
    await died(db)  # dies again, this time before the message was at work: only taken, waiting for a slot

    db = await backend.open()
    inbox = Inbox(db, lease_s=LEASE_S)
    await inbox.recover()
    third = await inbox.claim_next("telegram:c1")
    assert third is not None and (third.interrupted, third.failures) == (1, 1)
    await db.close()


async def test_a_message_that_only_waited_is_never_held_to_account_for_restarts(backend: Backend) -> None:
    for _ in range(15):  # more restarts than any message may be interrupted at work
        db = await backend.open()
        inbox = Inbox(db, lease_s=LEASE_S)
        await inbox.put(message("1"))
        await inbox.recover()
        claimed = await inbox.claim_next("telegram:c1")
        assert claimed is not None and claimed.interrupted == 0
        await died(db)


async def test_finish_queues_each_reply_once(backend: Backend) -> None:
    db = await backend.open()
    inbox, outbox = Inbox(db), Outbox(db)
    await inbox.put(message("1"))
    claimed = await inbox.claim_next("telegram:c1")
    assert claimed is not None
    await inbox.finish(claimed.inbox_id, "answered", [reply("r1")])
    await inbox.finish(claimed.inbox_id, "answered", [reply("r1")])  # worked twice after a crash
    pending = await outbox.pending("telegram")
    assert [p.reply.reply_id for p in pending] == ["r1"]
    await outbox.mark_sent(pending[0].outbox_id, "platform-77")
    assert await outbox.pending("telegram") == []
    assert await outbox.unsent("telegram") == 0
    assert await inbox.unfinished() == 0
    await db.close()


async def test_a_failed_transaction_leaves_nothing_behind(backend: Backend) -> None:
    db = await backend.open()
    inbox, outbox = Inbox(db), Outbox(db)
    await inbox.put(message("1"))
    claimed = await inbox.claim_next("telegram:c1")
    assert claimed is not None

    def explode(conn: object) -> None:
        raise RuntimeError("disk full")

    try:
        await inbox.finish(claimed.inbox_id, "answered", [reply("r1")], explode)
    except RuntimeError:
        pass
    assert await outbox.pending("telegram") == []
    assert await inbox.unfinished() == 1
    await db.close()


# The schema as versions before `schema_versions` created it (CREATE TABLE IF NOT EXISTS at every start).
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, platform_message_id TEXT NOT NULL,
    chat_key TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', outcome TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, received_at REAL NOT NULL, finished_at REAL,
    UNIQUE (channel, platform_message_id)
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (status, chat_key, id);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, reply_id TEXT NOT NULL UNIQUE, inbox_id INTEGER, channel TEXT NOT NULL,
    payload TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, receipt TEXT, created_at REAL NOT NULL, sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, channel, id);
CREATE TABLE IF NOT EXISTS drafts (inbox_id INTEGER PRIMARY KEY, edit_token TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT, chat_key TEXT NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_chat ON turns (chat_key, id);
CREATE TABLE IF NOT EXISTS chat_state (
    chat_key TEXT PRIMARY KEY, model TEXT, last_sources TEXT, pending_action TEXT, pending_expires REAL
);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT, inbox_id INTEGER NOT NULL, person TEXT NOT NULL, model TEXT NOT NULL,
    day TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, energy_wh REAL,
    ttft_s REAL, total_s REAL NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_person_day ON usage (person, day, model);
CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
"""


def tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


async def test_a_database_of_the_unversioned_layout_keeps_its_rows_and_is_brought_forward(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    old = message("1")
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute(
            "INSERT INTO inbox (channel, platform_message_id, chat_key, payload, received_at) VALUES (?, ?, ?, ?, 1.0)",
            (old.channel, old.platform_message_id, old.chat_key, old.model_dump_json()),
        )
        conn.execute("INSERT INTO checkpoints VALUES ('never', 'read', 1.0)")

    db = await open_db(tmp_path)
    assert "checkpoints" not in tables(path) and "schema_versions" in tables(path)
    assert await db.run(lambda conn: schema_version(conn, "core")) == len(CORE_MIGRATIONS) == 10
    inbox = Inbox(db)
    assert await inbox.put(message("1")) is False  # the old row is still there
    claimed = await inbox.claim_next("telegram:c1")
    assert claimed is not None and claimed.message == old
    await db.close()


async def test_a_fresh_database_has_the_same_tables_as_an_upgraded_one(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    with closing(sqlite3.connect(tmp_path / "old" / "state.sqlite3")) as conn:
        conn.executescript(OLD_SCHEMA)
    for folder in (tmp_path / "old", tmp_path / "new"):
        db = await open_db(folder)
        await db.close()
    assert tables(tmp_path / "old" / "state.sqlite3") == tables(tmp_path / "new" / "state.sqlite3")


async def test_migrations_run_once_in_order_each_with_its_version(backend: Backend) -> None:
    ran: list[int] = []

    def step(version: int) -> Migration:
        def change(conn: Connection) -> None:
            ran.append(version)
            conn.execute(f"ALTER TABLE things ADD COLUMN c{version} INTEGER")

        return (version, change)

    first: list[Migration] = [
        (1, "CREATE TABLE things (id INTEGER PRIMARY KEY); -- a comment; with ';'\nINSERT INTO things VALUES (1)"),
        step(2),
    ]
    db = await backend.open()
    assert await db.migrate("test", first) == 2
    assert await db.migrate("test", first) == 2
    assert ran == [2]
    assert await db.migrate("test", [*first, step(3), step(4)]) == 4
    assert ran == [2, 3, 4]  # only what was new, in order
    assert await db.run(lambda conn: columns(conn, "things")) == ["id", "c2", "c3", "c4"]
    await db.close()


async def test_a_failed_migration_leaves_the_previous_version_whole(backend: Backend) -> None:
    def broken(conn: Connection) -> None:
        conn.execute("ALTER TABLE things ADD COLUMN half INTEGER")
        raise RuntimeError("power cut")

    db = await backend.open()
    with pytest.raises(RuntimeError, match="power cut"):
        await db.migrate("test", [(1, "CREATE TABLE things (id INTEGER PRIMARY KEY); INSERT INTO things VALUES (1)"),
                                  (2, broken)])  # fmt: skip
    assert await db.run(lambda conn: version_of(conn, "test")) == 1
    assert await db.run(lambda conn: columns(conn, "things")) == ["id"]
    await db.close()


def version_of(conn: Connection, owner: str) -> int:
    row = conn.execute("SELECT version FROM schema_versions WHERE owner=?", (owner,)).fetchone()
    return int(row[0]) if row else 0


async def test_a_database_of_a_newer_version_is_refused_and_left_alone(backend: Backend) -> None:
    db = await backend.open()
    await db.run(lambda conn: conn.execute("UPDATE schema_versions SET version=99 WHERE owner='core'"))
    await db.close()
    with pytest.raises(SchemaTooNew, match=r"written by a newer Confide \(core schema 99, this version knows 10\)"):
        await backend.open()
    db = StateDB(backend.path / "state.sqlite3") if backend.url is None else PostgresState(backend.url)
    adapter: list[Migration] = [(1, "CREATE TABLE telegram_x (a TEXT)")]
    # Another owner is not held back by the core's version: its tables are brought forward on their own.
    if isinstance(db, StateDB):
        with closing(connect(backend.path / "state.sqlite3")) as conn:
            assert schema_version(conn, "core") == 99  # nothing was changed
            apply_migrations(conn, "telegram", adapter)
            conn.execute("UPDATE schema_versions SET version=2 WHERE owner='telegram'")
            with pytest.raises(SchemaTooNew, match=r"\(telegram schema 2, this version knows 1\)"):
                apply_migrations(conn, "telegram", adapter)
        return
    await db._submit(db._open_sync)  # the pool alone, without the core's migrations that refuse
    try:
        assert await db.run(lambda conn: version_of(conn, "core")) == 99  # nothing was changed
        assert await db.migrate("telegram", adapter) == 1
        await db.run(lambda conn: conn.execute("UPDATE schema_versions SET version=2 WHERE owner='telegram'"))
        with pytest.raises(SchemaTooNew, match=r"\(telegram schema 2, this version knows 1\)"):
            await db.migrate("telegram", adapter)
    finally:
        await db.close()


async def test_each_owner_has_its_own_version(backend: Backend) -> None:
    db = await backend.open()
    alpha: list[Migration] = [(1, "CREATE TABLE alpha_t (a TEXT)"), (2, "ALTER TABLE alpha_t ADD COLUMN b TEXT")]
    assert await db.migrate("alpha", alpha) == 2
    assert await db.migrate("beta", [(1, "CREATE TABLE beta_t (a TEXT)")]) == 1
    versions = await db.run(lambda conn: dict(conn.execute("SELECT owner, version FROM schema_versions").fetchall()))
    assert versions == {"core": len(CORE_MIGRATIONS), "alpha": 2, "beta": 1}
    with pytest.raises(ValueError, match="numbered 1, 2, 3"):
        await db.migrate("gamma", [(2, "CREATE TABLE gamma_t (a TEXT)")])
    await db.close()


async def test_adapters_keep_their_tables_in_the_state_database_beside_the_core(backend: Backend) -> None:
    db = await backend.open()
    sent = SentParts(await db.platform_state("telegram", TELEGRAM_MIGRATIONS))
    email = EmailState(await db.platform_state("email", EMAIL_MIGRATIONS))
    await asyncio.gather(sent.record("r1", 0, 41), email.mark_sent("r2", "<m2@x>"), Inbox(db).put(message("1")))
    await sent.record("r1", 0, 41)  # recorded again (a retried delivery): one row, the same id
    await email.save_checkpoint("INBOX", 7, 12)
    await email.save_checkpoint("INBOX", 7, 13)
    assert await sent.parts("r1") == {0: 41}
    assert await email.sent_message_id("r2") == "<m2@x>" and await email.checkpoint("INBOX") == (7, 13)
    assert await email.mark_sending("r3", "<m3@x>") is False and await email.mark_sending("r3", "<m3@x>") is True
    versions = await db.run(lambda conn: dict(conn.execute("SELECT owner, version FROM schema_versions").fetchall()))
    await db.close()
    assert versions["telegram"] == 2 and versions["email"] == 2
    if backend.url is None:
        assert {"telegram_sent_parts", "email_sent", "email_imap_checkpoint", "inbox"} <= tables(
            backend.path / "state.sqlite3"
        )


# The platforms' tables as the previous version created them, each adapter on a connection of its own.
PREVIOUS_PLATFORM_TABLES = """
CREATE TABLE telegram_sent_parts (reply_id TEXT NOT NULL, part INTEGER NOT NULL, message_id INTEGER NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (reply_id, part));
CREATE TABLE telegram_sending (reply_id TEXT NOT NULL, part INTEGER NOT NULL, PRIMARY KEY (reply_id, part));
CREATE TABLE email_sent (reply_id TEXT PRIMARY KEY, message_id TEXT NOT NULL, sent_at REAL NOT NULL);
CREATE TABLE email_imap_checkpoint (mailbox TEXT PRIMARY KEY, uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE email_sending (reply_id TEXT PRIMARY KEY, message_id TEXT NOT NULL, started_at REAL NOT NULL);
INSERT INTO schema_versions VALUES ('telegram', 2), ('email', 2);
INSERT INTO telegram_sending VALUES ('r1', 1);
INSERT INTO email_sending VALUES ('r2', '<m2@x>', 1.0);
INSERT INTO email_imap_checkpoint VALUES ('INBOX', 7, 12, 1.0);
"""


async def test_a_state_database_of_the_previous_version_keeps_the_platforms_rows(tmp_path: Path) -> None:
    db = await open_db(tmp_path)
    await db.close()
    with closing(sqlite3.connect(tmp_path / "state.sqlite3")) as conn, conn:
        conn.executescript(PREVIOUS_PLATFORM_TABLES)
        conn.execute("INSERT INTO telegram_sent_parts VALUES ('r1', 0, 41, ?)", (time.time(),))
    db = await open_db(tmp_path)
    sent = SentParts(await db.platform_state("telegram", TELEGRAM_MIGRATIONS))
    email = EmailState(await db.platform_state("email", EMAIL_MIGRATIONS))
    assert await sent.parts("r1") == {0: 41} and await sent.begin("r1", 1) is True  # part 1 stays in doubt
    assert await email.mark_sending("r2", "<m2@x>") is True and await email.checkpoint("INBOX") == (7, 12)
    await db.close()


async def test_an_exception_inside_a_platforms_transaction_undoes_its_write(backend: Backend) -> None:
    """Each call of a platform is one transaction: a part recorded as sent and its sending mark cleared go together
    (the adapters once wrote on autocommit connections, where the first write stayed after the second failed)."""
    db = await backend.open()
    state = await db.platform_state("telegram", TELEGRAM_MIGRATIONS)
    sent = SentParts(state)

    def mark_and_fail(conn: Connection) -> None:
        conn.execute("INSERT INTO telegram_sending VALUES ('r1', 0)")
        raise RuntimeError("stopped halfway")

    with pytest.raises(RuntimeError, match="stopped halfway"):
        await state.run(mark_and_fail)
    assert await sent.begin("r1", 0) is False, "the write before the exception was kept"
    await db.run(lambda conn: conn.execute("DROP TABLE telegram_sending"))  # so `record` fails after its insert
    with pytest.raises(Exception, match="telegram_sending") as failed:  # each backend's "no such table"
        await sent.record("r1", 0, 41)
    assert type(failed.value).__name__ in {"OperationalError", "UndefinedTable"}
    assert await sent.parts("r1") == {}, "the part was recorded as sent by a record that failed"
    await db.close()


@dataclass
class KeepingAdapter(RecordingAdapter):
    """An adapter of a platform with tables of its own: notes whether it had their handle when it started."""

    state: PlatformState | None = None
    had_state_at_run: bool | None = None

    async def attach_state(self, state: PlatformState) -> None:
        self.state = state

    async def run(self, inbox: InboxPort) -> None:
        self.had_state_at_run = self.state is not None
        await super().run(inbox)


async def test_assembly_runs_a_platforms_migrations_and_hands_its_adapter_the_state_first(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = KeepingAdapter(channel="pigeon")
    migrations: list[Migration] = [
        (1, "CREATE TABLE pigeon_seen (id TEXT PRIMARY KEY)"),
        (2, "ALTER TABLE pigeon_seen ADD COLUMN at REAL"),
    ]
    pigeon = Platform(name="pigeon", settings=BaseModel, build=lambda settings: adapter, migrations=migrations)
    monkeypatch.setattr(bridge.app, "platforms", lambda: {"pigeon": pigeon})
    settings = make_settings(tmp_path, {"main": model_for(fake_llm)})
    async with Harness(settings, history, adapter) as h:
        assert adapter.state is not None and adapter.state.owner == "pigeon"
        await adapter.state.run(lambda conn: conn.execute("INSERT INTO pigeon_seen VALUES ('m1', 1.5)"))
        await eventually(lambda: adapter.had_state_at_run is not None)
        versions = await h.db.run(lambda conn: dict(conn.execute("SELECT owner, version FROM schema_versions")))
        seen = await h.db.run(lambda conn: [tuple(row) for row in conn.execute("SELECT id, at FROM pigeon_seen")])
    assert adapter.had_state_at_run is True
    assert versions["pigeon"] == 2 and seen == [("m1", 1.5)]


async def test_concurrent_calls_share_one_commit_and_fail_alone(tmp_path: Path) -> None:
    """Group commit: callers waiting while the database thread is busy join one transaction (one fsync), each
    in its own savepoint; a failing one is undone alone and learns why; all are answered after the commit."""
    db = await open_db(tmp_path)
    await db.run(lambda conn: conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
    commits: list[str] = []
    conn = db._open_conn()
    conn.set_trace_callback(lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None)

    def slow(conn: sqlite3.Connection) -> None:
        time.sleep(0.3)  # holds the thread while the others queue up

    def insert(n: int) -> Callable[[sqlite3.Connection], int]:
        def fn(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (?)", (n,))
            if n == 7:
                raise ValueError("seven is refused")
            return n

        return fn

    first = asyncio.ensure_future(db.run(slow))
    await asyncio.sleep(0.05)
    results = await asyncio.gather(*(db.run(insert(n)) for n in range(20)), return_exceptions=True)
    await first
    assert [r for r in results if not isinstance(r, Exception)] == [n for n in range(20) if n != 7]
    assert [str(r) for r in results if isinstance(r, Exception)] == ["seven is refused"]
    assert len(commits) == 2, "the twenty calls waiting behind the slow one did not share one commit"
    stored = await db.run(lambda conn: [row[0] for row in conn.execute("SELECT n FROM t ORDER BY rowid")])
    assert stored == [n for n in range(20) if n != 7]
    await db.close()
    with closing(connect(tmp_path / "state.sqlite3")) as again:  # durable: on disk after close
        assert again.execute("SELECT count(*) FROM t").fetchone()[0] == 19


async def test_the_queue_depth_metric_is_read_from_either_backend(backend: Backend) -> None:
    db = await backend.open()
    inbox = Inbox(db)
    for pid in ("1", "2"):
        await inbox.put(message(pid))
    await inbox.put(message("3").model_copy(update={"channel": "email"}))
    first = await inbox.claim_next("telegram:c1")
    assert first is not None
    await inbox.finish(first.inbox_id, "answered", [])
    await db.close()
    url = SecretStr(backend.url) if backend.url else None
    metrics = Metrics(backend.path / "state.sqlite3", url)
    depth = {
        sample.labels["channel"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "confide_queue_depth"
        for sample in family.samples
    }
    assert depth["telegram"] == 1 and depth["email"] == 1 and depth["matrix"] == 0


async def test_calls_run_side_by_side_on_postgresql_and_fail_alone(state_url: str) -> None:
    """Each call is a transaction on a connection of the pool, several at once (SQLite serializes them): four calls
    meet inside their transactions; the one that fails is undone alone."""
    db = PostgresState(state_url, pool_size=4)
    await db.open()
    await db.run(lambda conn: conn.execute("CREATE TABLE t (n INTEGER)"))
    meeting = threading.Barrier(4, timeout=10)

    def insert(n: int) -> Callable[[Connection], int]:
        def fn(conn: Connection) -> int:
            conn.execute("INSERT INTO t VALUES (?)", (n,))
            meeting.wait()  # only passes when four transactions are open at the same time
            if n == 2:
                raise ValueError("two is refused")
            return n

        return fn

    results = await asyncio.gather(*(db.run(insert(n)) for n in range(4)), return_exceptions=True)
    stored = await db.run(lambda conn: sorted(row[0] for row in conn.execute("SELECT n FROM t")))
    await db.close()
    assert [str(r) if isinstance(r, Exception) else r for r in results] == [0, 1, "two is refused", 3]
    assert stored == [0, 1, 3]


async def test_a_voice_message_heard_before_heard_was_a_field_is_read_forward(backend: Backend) -> None:
    """An inbox row written by the previous version kept what was heard in `extra`: it is still heard, once."""
    db = await backend.open()
    inbox = Inbox(db)
    old = message("1").model_dump(mode="json")
    old.update(text="where is the key?", extra={"chat_id": 7, "heard": {"text": "where is the key?", "file": "a.ogg"}})
    await db.run(lambda conn: conn.execute(
        "INSERT INTO inbox (channel, platform_message_id, chat_key, payload, received_at) VALUES (?, ?, ?, ?, 1.0)",
        ("telegram", "1", "telegram:c1", json.dumps(old)),
    ))  # fmt: skip
    claimed = await inbox.claim_next("telegram:c1")
    assert claimed is not None
    assert claimed.message.heard is not None and claimed.message.heard.file == "a.ogg"
    assert claimed.message.extra == {"chat_id": 7}
    await db.close()
