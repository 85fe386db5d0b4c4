"""Per-chat memory in the state database: recent turns, chosen model, last sources, pending confirmation,
and which persons shared their history into a group.

In a group every member has a memory of their own (`state_key`): nothing one member says or is told enters
another member's prompt, /sources, /reset, /model or /compare.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from bridge.messages import Citation
from bridge.state.store import Connection, StateStore


@dataclass(frozen=True)
class Turn:
    role: str  # "user" | "assistant"
    text: str


@dataclass
class ChatState:
    chat_key: str
    model: str | None = None
    last_sources: list[Citation] = field(default_factory=list)
    pending: dict[str, Any] | None = None
    pending_expires: float = 0.0
    language: str | None = None  # the language this person last wrote in here

    def pending_for(self, person: str | None, now: float | None = None) -> dict[str, Any] | None:
        now = time.time() if now is None else now
        if self.pending and self.pending.get("person") == person and self.pending_expires > now:
            return self.pending
        return None


def state_key(chat_key: str, person: str | None, is_direct: bool) -> str:
    """Where a chat's memory is kept: a direct chat's under the chat, a group's per chat and person."""
    return chat_key if is_direct else f"{chat_key}|{person or '?'}"


class Chats:
    def __init__(self, db: StateStore) -> None:
        self._db = db

    async def load(self, chat_key: str) -> ChatState:
        def query(conn: Connection) -> ChatState:
            row = conn.execute("SELECT * FROM chat_state WHERE chat_key=?", (chat_key,)).fetchone()
            if row is None:
                return ChatState(chat_key)
            sources = [Citation.model_validate(c) for c in json.loads(row["last_sources"] or "[]")]
            pending = json.loads(row["pending_action"]) if row["pending_action"] else None
            return ChatState(chat_key, row["model"], sources, pending, row["pending_expires"] or 0.0, row["language"])

        return await self._db.run(query)

    async def recent_turns(self, chat_key: str, limit: int) -> list[Turn]:
        if limit <= 0:
            return []

        def query(conn: Connection) -> list[Turn]:
            rows = conn.execute(
                "SELECT role, text FROM turns WHERE chat_key=? ORDER BY id DESC LIMIT ?", (chat_key, limit)
            ).fetchall()
            return [Turn(r["role"], r["text"]) for r in reversed(rows)]

        return await self._db.run(query)

    async def shared(self, chat_key: str) -> frozenset[str]:
        """The persons who shared their own history into this group (/share), and have not taken it back."""

        def query(conn: Connection) -> frozenset[str]:
            rows = conn.execute("SELECT person FROM room_shares WHERE chat_key=?", (chat_key,)).fetchall()
            return frozenset(r["person"] for r in rows)

        return await self._db.run(query)


# The functions below run inside a state transaction (see Inbox.finish), so a reply and the memory of it
# are committed together.


def set_language(conn: Connection, chat_key: str, language: str) -> None:
    _ensure(conn, chat_key)
    conn.execute("UPDATE chat_state SET language=? WHERE chat_key=?", (language, chat_key))


def _ensure(conn: Connection, chat_key: str) -> None:
    conn.execute("INSERT INTO chat_state (chat_key) VALUES (?) ON CONFLICT DO NOTHING", (chat_key,))


def add_turns(conn: Connection, chat_key: str, question: str, answer: str) -> None:
    now = time.time()
    conn.executemany(
        "INSERT INTO turns (chat_key, role, text, created_at) VALUES (?, ?, ?, ?)",
        [(chat_key, "user", question, now), (chat_key, "assistant", answer, now)],
    )


def set_last_sources(conn: Connection, chat_key: str, citations: list[Citation]) -> None:
    _ensure(conn, chat_key)
    payload = json.dumps([c.model_dump(mode="json") for c in citations])
    conn.execute("UPDATE chat_state SET last_sources=? WHERE chat_key=?", (payload, chat_key))


def set_model(conn: Connection, chat_key: str, model: str) -> None:
    _ensure(conn, chat_key)
    conn.execute("UPDATE chat_state SET model=? WHERE chat_key=?", (model, chat_key))


def set_pending(conn: Connection, chat_key: str, action: dict[str, Any] | None, ttl_s: float = 300) -> None:
    _ensure(conn, chat_key)
    payload = json.dumps(action) if action else None
    expires = time.time() + ttl_s if action else 0
    conn.execute(
        "UPDATE chat_state SET pending_action=?, pending_expires=? WHERE chat_key=?", (payload, expires, chat_key)
    )


def reset(conn: Connection, chat_key: str) -> None:
    _ensure(conn, chat_key)
    conn.execute("DELETE FROM turns WHERE chat_key=?", (chat_key,))
    conn.execute("UPDATE chat_state SET last_sources=NULL WHERE chat_key=?", (chat_key,))


def share(conn: Connection, chat_key: str, person: str) -> None:
    conn.execute(
        "INSERT INTO room_shares (chat_key, person, shared_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (chat_key, person, time.time()),
    )


def unshare(conn: Connection, chat_key: str, person: str) -> None:
    conn.execute("DELETE FROM room_shares WHERE chat_key=? AND person=?", (chat_key, person))
