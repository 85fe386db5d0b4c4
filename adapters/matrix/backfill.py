"""`confide import matrix`: a room's past messages, decrypted where keys exist, for a person's history, or
(`--group`) for the room's own history, the one Confide answers from when asked in that room.

Only fetching lives here: the fetched room is a source of the import service (bridge.history.imports), stored with the
same ingest, progress and summary as every import.

Logs in as Confide's stored device (the one the live adapter uses), so the room keys it received are
used. Record ids come from event ids: importing a room twice adds nothing, and a group's messages get the ids
the live adapter gives them (bridge/handler.room_record), so a backfill and the live indexing never double.
Confide's own answers are not imported (they are no evidence), and an edited message is imported in its
latest version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nio import (
    AsyncClient,
    JoinedMembersResponse,
    MegolmEvent,
    RoomGetStateEventResponse,
    RoomMessage,
    RoomMessagesResponse,
    RoomResolveAliasResponse,
)

from adapters.matrix.events import CHANNEL, relations
from adapters.matrix.render import permalink
from adapters.matrix.session import login
from bridge.config import Settings
from bridge.dispatch.router import MAX_TEXT_CHARS, scope_of_room
from bridge.messages import HistoryRecord

log = logging.getLogger(__name__)
PAGE = 200


class BackfillError(Exception):
    pass


@dataclass
class RoomHistory:
    """A room's messages, fetched: a `Source` of the import service (its records are held, so its progress has a
    total)."""

    room_id: str
    name: str
    records: list[HistoryRecord] = field(default_factory=list)
    undecryptable: int = 0
    chat = True  # a room's messages are indexed with their neighbours

    def items(self) -> list[HistoryRecord]:
        return self.records


@dataclass(frozen=True)
class Target:
    """Whose history the room's messages join: a person's (`scope` is their id) or the group's own."""

    scope: str
    group: bool
    accounts: frozenset[str]  # the person's Matrix accounts; for a group, every configured person's
    names: dict[str, str]  # account -> how a group's history names a configured person (as the live adapter does)


def person_target(settings: Settings, person: str) -> Target:
    accounts = frozenset(a.removeprefix(f"{CHANNEL}:") for p in settings.persons if p.id == person for a in p.accounts)
    return Target(person, False, accounts, {})


def group_scope(room_id: str) -> str:
    """The index scope of a Matrix group, as the live bridge names it."""
    return scope_of_room(f"{CHANNEL}:{room_id}")


def group_target(settings: Settings) -> Target:
    names = {
        a.removeprefix(f"{CHANNEL}:"): p.name or p.id
        for p in settings.persons
        for a in p.accounts
        if a.startswith(f"{CHANNEL}:")
    }
    return Target("", True, frozenset(names), names)


async def fetch_room(
    settings: Settings, room: str, target: Target, on_page: Callable[[int], None] | None = None
) -> RoomHistory:
    """Log in as Confide's device and read the room's messages, oldest first; `on_page` counts events read."""
    client = await login(settings)
    try:
        return await _fetch(client, room, target, on_page)
    finally:
        await client.close()


def undecryptable_note(fetched: RoomHistory) -> str | None:
    if not fetched.undecryptable:
        return None
    return (
        f"{fetched.undecryptable} encrypted message(s) could not be decrypted: Confide's device has no key "
        "for them. Share the room keys with it and import again."
    )


async def _fetch(client: AsyncClient, room: str, target: Target, on_page: Callable[[int], None] | None) -> RoomHistory:
    room_id = await _resolve(client, room)
    members = await client.joined_members(room_id)
    if not isinstance(members, JoinedMembersResponse):
        raise BackfillError(f"Confide ({client.user_id}) cannot read {room}: is it a member? ({members})")
    names = {m.user_id: m.display_name or m.user_id for m in members.members}
    if target.group:
        if len(members.members) <= 2:  # as the live adapter tells a direct chat from a group
            raise BackfillError(f"{room} is a direct chat, not a group: import it into a person's history (--person)")
        # The room's history names people as its live messages do: a configured person by name, others by id.
        names = {user: target.names.get(user, user) for user in names}
        target = Target(group_scope(room_id), True, target.accounts, target.names)
    elif not target.accounts & set(names):
        # The import puts a room into one person's history: only a room that person is in.
        raise BackfillError(
            f"none of {target.scope}'s Matrix accounts ({', '.join(sorted(target.accounts)) or 'none'}) is in {room}"
        )
    fetched = RoomHistory(room_id, await _room_name(client, room_id))
    newest_edits: dict[str, dict[str, Any]] = {}
    start: str | None = None
    while True:
        page = await client.room_messages(room_id, start=start, limit=PAGE)  # newest first
        if not isinstance(page, RoomMessagesResponse):
            raise BackfillError(f"fetching the messages of {room} failed: {page}")
        for event in page.chunk:
            await _take(client, fetched, names, newest_edits, target, event)
        if on_page:
            on_page(len(page.chunk))
        if not page.chunk or not page.end or page.end == start:
            break
        start = page.end
    fetched.records.reverse()
    return fetched


async def _take(
    client: AsyncClient,
    fetched: RoomHistory,
    names: dict[str, str],
    newest_edits: dict[str, dict[str, Any]],
    target: Target,
    event: Any,
) -> None:
    if isinstance(event, MegolmEvent):
        fetched.undecryptable += 1
        return
    if not isinstance(event, RoomMessage) or event.sender == client.user_id:
        return
    content = event.source.get("content", {})
    _, _, is_edit = relations(content)
    if is_edit:
        # Pages come newest first: the first edit seen of a message is its latest version.
        original = content["m.relates_to"].get("event_id")
        if original and isinstance(content.get("m.new_content"), dict):
            newest_edits.setdefault(original, content["m.new_content"])
        return
    content = newest_edits.get(event.event_id, content)
    if content.get("msgtype") not in ("m.text", "m.emote", "m.notice"):
        return
    if event.sender not in names:
        names[event.sender] = (
            target.names.get(event.sender, event.sender)
            if target.group
            else await _display_name(client, fetched.room_id, event.sender)
        )
    text = str(content.get("body", ""))
    if target.group:
        if not text.strip() or text.lstrip().startswith("/"):
            return  # as live: a command to the bot is none of the room's talk
        fetched.records.append(_group_record(fetched, event, names[event.sender], target.scope, text))
        return
    fetched.records.append(
        HistoryRecord(
            id=f"matrix:{event.event_id}",
            person=target.scope,
            channel=CHANNEL,
            conversation=fetched.name,
            author=names[event.sender],
            time=datetime.fromtimestamp(event.server_timestamp / 1000, UTC),
            text=text,
            source=f"matrix:{fetched.room_id}",
            link=permalink(fetched.room_id, event.event_id),
            extra={"sender": event.sender, "event_id": event.event_id},
        )
    )


def _group_record(fetched: RoomHistory, event: Any, author: str, scope: str, text: str) -> HistoryRecord:
    """A message of the group's past as the live adapter would have indexed it (bridge/handler.room_record)."""
    return HistoryRecord(
        id=f"m:{CHANNEL}:{event.event_id}",
        person=scope,
        channel=CHANNEL,
        conversation=f"Group chat ({CHANNEL})",
        author=author,
        time=datetime.fromtimestamp(event.server_timestamp / 1000, UTC),
        text=text[:MAX_TEXT_CHARS],
        source=f"{CHANNEL}:{fetched.room_id}",
        link=event.event_id,
    )


def asked_in_room(record: HistoryRecord) -> str:
    """The id the live adapter gave this message if it was a question to Confide (bridge/handler.question_record)."""
    return f"q:{record.id.removeprefix('m:')}"


async def _resolve(client: AsyncClient, room: str) -> str:
    if not room.startswith("#"):
        return room
    response = await client.room_resolve_alias(room)
    if not isinstance(response, RoomResolveAliasResponse):
        raise BackfillError(f"the room alias {room} is unknown: {response}")
    return str(response.room_id)


async def _room_name(client: AsyncClient, room_id: str) -> str:
    for event_type, key in (("m.room.name", "name"), ("m.room.canonical_alias", "alias")):
        response = await client.room_get_state_event(room_id, event_type)
        if isinstance(response, RoomGetStateEventResponse) and response.content.get(key):
            return str(response.content[key])
    return room_id


async def _display_name(client: AsyncClient, room_id: str, user_id: str) -> str:
    """Someone who has left the room: the name their last membership event carried."""
    response = await client.room_get_state_event(room_id, "m.room.member", user_id)
    if isinstance(response, RoomGetStateEventResponse) and response.content.get("displayname"):
        return str(response.content["displayname"])
    return user_id
