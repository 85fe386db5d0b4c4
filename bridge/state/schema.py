"""The core's tables, as one ordered list of migrations that both state backends run (bridge/state/store.py).

Scripts use SQLite's type names; PostgreSQL reads them as its own (bridge/state/postgres.py postgres_script).
"""

from __future__ import annotations

from bridge.state.store import Migration

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
    (
        8,
        """
-- Who holds a taken message, and until when (bridge/dispatch/inbox.py): several processes may work one inbox
-- (PostgreSQL), and one that dies stops renewing its lease, so another takes its messages over once it runs out.
ALTER TABLE inbox ADD COLUMN owner TEXT;
ALTER TABLE inbox ADD COLUMN lease_until REAL;
-- Each chat's unfinished messages in order: its head is the one message of the chat that may be taken.
CREATE INDEX inbox_unfinished ON inbox (chat_key, id) WHERE status != 'done';
""",
    ),
    (
        9,
        """
-- Who may talk to Confide (bridge/state/persons.py): `confide persons add|remove` changes it while Confide runs.
-- CONFIDE_PERSONS seeds it; a person removed here stays removed (`removed` 1) whatever the environment says.
CREATE TABLE persons (
    id TEXT PRIMARY KEY,
    settings TEXT NOT NULL,                   -- PersonSettings as JSON
    removed INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
""",
    ),
    (
        10,
        """
-- Which process holds each platform's connection (bridge/dispatch/roles.py): one gateway per account, enforced by
-- a lease; and what workers need to know of the platform (how people address the bot in a group).
CREATE TABLE gateways (
    channel TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    lease_until REAL NOT NULL,
    bot_names TEXT NOT NULL DEFAULT '[]'      -- JSON list
);
""",
    ),
]
