"""The live Matrix adapter: sync -> inbox, outbox -> room messages (encrypted where the room is).

Reliability: the sync token is saved only after every event of that sync is in the inbox (or, for an
event whose keys have not arrived, in the saved pending list), so a crash re-reads the sync and the
inbox's idempotent `put` stores each event once. Sends use the reply id as the transaction id, so the
homeserver deduplicates a retried send.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import uuid
from collections import OrderedDict
from typing import Any

from nio import (
    AsyncClient,
    ErrorResponse,
    Event,
    InviteMemberEvent,
    JoinedMembersResponse,
    LocalProtocolError,
    MatrixRoom,
    MegolmEvent,
    ProfileGetDisplayNameResponse,
    RoomGetEventResponse,
    RoomMemberEvent,
    RoomMessage,
    RoomMessagesResponse,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)
from nio.exceptions import EncryptionError

from adapters.attachments import safe_name
from adapters.matrix import files, render
from adapters.matrix.events import CHANNEL, Me, relations, to_incoming
from adapters.matrix.session import login
from adapters.matrix.settings import matrix_settings
from adapters.matrix.state import SyncState, store_dir
from bridge.config import Settings
from bridge.intake.adapter import Capabilities, InboxPort, Members
from bridge.intake.hearing import fetched_to_hear
from bridge.intake.persons import PersonDirectory
from bridge.messages import Attachment, Image, IncomingMessage, OutgoingReply

log = logging.getLogger(__name__)

SYNC_TIMEOUT_MS = 30_000
MAX_BACKOFF_S = 30.0


class MatrixSendError(Exception):
    pass


class MatrixSyncError(Exception):
    pass


class MatrixAdapter:
    channel = CHANNEL

    def __init__(self, settings: Settings) -> None:
        own = matrix_settings(settings)
        assert own.user_id
        self.settings = settings
        self.capabilities = Capabilities(can_edit=True, edit_interval_s=1.0)
        self.directory = PersonDirectory(settings.persons)
        self.me = Me(own.user_id, "")
        self.rate_limited = 0  # 429 answers seen, each waited out and retried
        self._intake_stopped = False  # a graceful stop: sync no more
        self.client: AsyncClient | None = None
        self._state = SyncState.load(store_dir(settings))
        self._ready = asyncio.Event()
        self._keys_lock = asyncio.Lock()
        self._room_locks: dict[str, asyncio.Lock] = {}
        self._own_events: OrderedDict[str, bool] = OrderedDict()  # event id -> sent by us (bounded cache)
        self._files_dir = settings.data_dir / "attachments" / CHANNEL
        self._filter = {
            "room": {"timeline": {"limit": own.sync_timeline_limit}, "ephemeral": {"not_types": ["*"]}},
            "presence": {"not_types": ["*"]},
        }

    @property
    def bot_names(self) -> tuple[str, ...]:
        return self.me.names()

    # -- receiving ---------------------------------------------------------------------------------

    def attach_directory(self, directory: PersonDirectory) -> None:
        """The core's persons, which follow `confide persons` while Confide runs."""
        self.directory = directory

    async def run(self, inbox: InboxPort) -> None:
        try:
            await self._connect()
            backoff = 1.0
            while not self._intake_stopped:
                await inbox.wait_for_room()  # a nearly full disk: the homeserver keeps the events until there is room
                try:
                    await self._sync_once(inbox)
                    backoff = 1.0
                except Exception:
                    # The sync token was not saved: the next sync repeats this one, nothing is lost.
                    log.exception("Matrix sync of %s failed; retrying in %.0f s", self.me.user_id, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
            await asyncio.Event().wait()  # stopped syncing: the client stays logged in for deliveries until cancelled
        finally:
            self._ready.clear()
            if self.client is not None:
                await self.client.close()

    async def stop_intake(self) -> None:
        """A graceful stop: no further sync (the homeserver keeps the events); replies still go out."""
        self._intake_stopped = True

    async def _connect(self) -> None:
        self.client = await login(self.settings)
        self.client.add_response_callback(self._on_error_response, ErrorResponse)
        self._state = SyncState.load(store_dir(self.settings))
        profile = await self.client.get_displayname()
        if isinstance(profile, ProfileGetDisplayNameResponse) and profile.displayname:
            self.me = Me(self.me.user_id, profile.displayname)

    async def _on_error_response(self, response: ErrorResponse) -> None:
        if response.status_code == "M_LIMIT_EXCEEDED":
            self.rate_limited += 1
            log.warning(
                "Matrix rate limit for %s: waiting %s ms, then retrying", self.me.user_id, response.retry_after_ms
            )

    async def _sync_once(self, inbox: InboxPort) -> None:
        client = self._client()
        since = self._state.next_batch
        first_in_this_run = not self._ready.is_set()
        response = await client.sync(
            timeout=0 if first_in_this_run else SYNC_TIMEOUT_MS,
            sync_filter=self._filter,
            since=since,
            # After a restart nio knows no room: the full state gives it every room's members and encryption.
            full_state=first_in_this_run and since is not None,
        )
        if not isinstance(response, SyncResponse):
            raise MatrixSyncError(f"sync failed: {response}")
        await self._crypto_housekeeping()
        await self._accept_invites(response)
        if since is not None:  # on the very first start, history before now is not answered
            for room_id, info in response.rooms.join.items():
                await self._take_timeline(inbox, room_id, info, since)
        await self._retry_pending(inbox)
        self._state.next_batch = response.next_batch
        self._state.save()
        self._ready.set()

    async def _accept_invites(self, response: SyncResponse) -> None:
        client = self._client()
        for room_id, info in response.rooms.invite.items():
            inviter = next(
                (
                    e.sender
                    for e in info.invite_state
                    if isinstance(e, InviteMemberEvent) and e.state_key == self.me.user_id and e.membership == "invite"
                ),
                None,
            )
            if inviter is None or self.directory.person_for(f"{CHANNEL}:{inviter}") is None:
                log.info("ignoring the invite to %s from %s: not an allowed person", room_id, inviter)
                continue
            joined = await client.join(room_id)
            if isinstance(joined, ErrorResponse):
                log.error("joining %s on the invite of %s failed: %s", room_id, inviter, joined)
            else:
                log.info("joined %s on the invite of %s", room_id, inviter)

    async def _take_timeline(self, inbox: InboxPort, room_id: str, info: Any, since: str) -> None:
        room = self._client().rooms.get(room_id)
        if room is None:
            log.error("sync mentions room %s that nio does not know; its events wait for the next full sync", room_id)
            raise MatrixSyncError(f"unknown room {room_id}")
        events: list[Event] = list(info.timeline.events)
        if info.timeline.limited:
            events = await self._fill_gap(room_id, info.timeline.prev_batch, since) + events
        for event in _after_own_join(events, self.me.user_id):
            await self._take(inbox, room, event)

    async def _fill_gap(self, room_id: str, prev_batch: str | None, since: str) -> list[Event]:
        """A limited timeline skipped events between our last sync and this one: fetch them back."""
        client, older, start = self._client(), [], prev_batch
        while start:
            page = await client.room_messages(room_id, start=start, end=since, limit=100)
            if not isinstance(page, RoomMessagesResponse):
                raise MatrixSyncError(f"fetching missed events of {room_id} failed: {page}")
            older.extend(page.chunk)
            if not page.chunk or not page.end or page.end == start:
                break
            start = page.end
        log.info("fetched %d event(s) of %s missed by a limited sync", len(older), room_id)
        return list(reversed(older))

    async def _take(self, inbox: InboxPort, room: MatrixRoom, event: Event) -> None:
        if getattr(event, "sender", None) == self.me.user_id:
            self._remember_own(event.event_id, True)
            return  # our own replies and edits: nothing to answer, and no use filling the inbox
        if isinstance(event, MegolmEvent):
            await self._undecryptable(room, event)
            return
        if not isinstance(event, RoomMessage):
            return
        message = await self._incoming(event, room)
        if message is not None:
            await inbox.put(message)

    async def _incoming(self, event: RoomMessage, room: MatrixRoom) -> IncomingMessage | None:
        reply_to, _, _ = relations(event.source.get("content", {}))
        in_group = room.member_count > 2
        replies_to_bot = reply_to is not None and in_group and await self._is_own_event(room.room_id, reply_to)
        message = to_incoming(event, room, self.me, replies_to_bot)
        if message is not None and self._may_fetch(message):
            message = await self._with_file(message, event.source.get("content", {}))
        return message

    def _may_fetch(self, message: IncomingMessage) -> bool:
        """Only documents a known person sends are imported (in a direct chat into their history, in a group into
        the room's), and their voice messages in a direct chat heard, so only those are downloaded; strangers'
        files never are."""
        if len(message.attachments) != 1 or self.directory.person_for(f"{CHANNEL}:{message.sender}") is None:
            return False
        attachment = message.attachments[0]
        return not attachment.is_media or self._hears(message, attachment)

    def _hears(self, message: IncomingMessage, attachment: Attachment) -> bool:
        """A voice message (m.audio) in a direct chat is a question, where a transcriber is set up."""
        return message.is_direct and fetched_to_hear(self.settings.transcriber, attachment.mime_type, attachment.size)

    async def _with_file(self, message: IncomingMessage, content: dict[str, Any]) -> IncomingMessage:
        [attachment] = message.attachments
        name = f"{safe_name(message.platform_message_id)}-{safe_name(attachment.name)}"
        path = self._files_dir / safe_name(message.chat_id) / name
        try:
            size = await asyncio.wait_for(files.fetch(self._client(), content, path), files.FETCH_TIMEOUT_S)
        except files.FileUnavailable as exc:
            # Passed on without the file: the person is told it could not be had, and may send it again.
            log.warning("file %r of %s in %s not fetched: %s", attachment.name, message.platform_message_id,
                        message.chat_id, exc)  # fmt: skip
            return message
        except Exception:
            # Whatever else went wrong (a timeout, odd keys, the disk): the same, so that one file can never
            # stop the sync, which would retry the same events forever.
            log.exception("file %r of %s in %s not fetched", attachment.name, message.platform_message_id,
                          message.chat_id)  # fmt: skip
            return message
        fetched = attachment.model_copy(update={"path": str(path), "size": size})
        return message.model_copy(update={"attachments": [fetched]})

    async def _is_own_event(self, room_id: str, event_id: str) -> bool:
        if event_id in self._own_events:
            return self._own_events[event_id]
        response = await self._client().room_get_event(room_id, event_id)
        if not isinstance(response, RoomGetEventResponse):
            log.warning("could not fetch %s in %s to see whom it replies to: %s", event_id, room_id, response)
            return False
        own = response.event.sender == self.me.user_id
        self._remember_own(event_id, own)
        return own

    def _remember_own(self, event_id: str, own: bool) -> None:
        self._own_events[event_id] = own
        while len(self._own_events) > 10_000:
            self._own_events.popitem(last=False)

    async def members(self, chat_id: str) -> Members:
        """The room's joined members besides the bot, by display name (or id where they set none)."""
        response = await self._client().joined_members(chat_id)
        if not isinstance(response, JoinedMembersResponse):
            raise MatrixSyncError(f"listing the members of {chat_id} failed: {response}")
        names = tuple(m.display_name or m.user_id for m in response.members if m.user_id != self.me.user_id)
        return Members(names, len(names))

    # -- encrypted events whose keys have not arrived ----------------------------------------------

    async def _undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        if event.event_id in self._state.pending:
            return
        log.warning("cannot decrypt %s from %s in %s yet (session %s)", event.event_id, event.sender, room.room_id,
                    event.session_id)  # fmt: skip
        self._state.pending[event.event_id] = {"room_id": room.room_id, "event": event.source}
        await self._request_keys(room, event)
        told = f"{room.room_id}|{event.sender}|{event.session_id}"
        if told in self._state.told or self.directory.person_for(f"{CHANNEL}:{event.sender}") is None:
            return  # told once per missing session; strangers are told nothing
        device = f"{matrix_settings(self.settings).device_name}, {self._client().device_id}"
        text = render.UNDECRYPTABLE.format(device=device)
        extra = {"event_id": event.event_id, "sender": event.sender}
        content = render.new_message(render.notice(text), extra, event.event_id)
        try:
            await self._send(room.room_id, content, _txn(event.event_id, "undecryptable"))
        except (MatrixSendError, LocalProtocolError, OSError):
            log.exception("telling %s about the undecryptable %s failed", event.sender, event.event_id)
            return
        self._state.told.append(told)

    async def _request_keys(self, room: MatrixRoom, event: MegolmEvent) -> None:
        client = self._client()
        event.room_id = room.room_id
        try:
            if event.session_id not in client.outgoing_key_requests:
                await client.request_room_key(event)  # our own other devices
            # ...and the sender's device, which holds the session.
            request = event.as_key_request(event.sender, client.device_id or "", device_id=event.device_id)
            await client.to_device(request, tx_id=_txn(event.event_id, "keyrequest"))
        except (LocalProtocolError, OSError):
            log.exception("requesting the room key for %s in %s failed", event.event_id, room.room_id)

    async def _retry_pending(self, inbox: InboxPort) -> None:
        client = self._client()
        for event_id, item in list(self._state.pending.items()):
            room = client.rooms.get(item["room_id"])
            event = MegolmEvent.from_dict(item["event"])
            if room is None or not isinstance(event, MegolmEvent):
                continue
            event.room_id = room.room_id
            assert client.olm is not None
            if client.olm.inbound_group_store.get(room.room_id, event.sender_key, event.session_id) is None:
                continue  # the key has not arrived yet
            try:
                decrypted = client.decrypt_event(event)
            except EncryptionError:
                log.exception("decrypting %s in %s failed although its key arrived", event_id, room.room_id)
                continue
            log.info("the key for %s arrived; it is processed now", event_id)
            await self._take(inbox, room, decrypted)
            del self._state.pending[event_id]

    # -- sending -----------------------------------------------------------------------------------

    async def deliver(self, reply: OutgoingReply) -> str | None:
        await self._ready.wait()
        event_id = await self._send(reply.chat_id, render.final_reply(reply), reply.reply_id)
        for number, image in enumerate(reply.images):
            # Its own transaction id: a delivery retried after a stop never shows a picture twice.
            await self._send_image(reply, image, _txn(reply.reply_id, f"image-{number}"))
        await self._typing(reply.chat_id, False)
        return reply.edit_token or event_id

    async def _send_image(self, reply: OutgoingReply, image: Image, txn: str) -> str:
        """Upload the picture (encrypted where the room is) and post it as m.image."""
        client = self._client()
        room_id = reply.chat_id
        room = client.rooms.get(room_id)
        encrypted = room is not None and room.encrypted
        data = image.data
        response, keys = await client.upload(
            io.BytesIO(data), "image/png", image.name, encrypt=encrypted, filesize=len(data)
        )
        if not isinstance(response, UploadResponse):
            raise MatrixSendError(f"uploading {image.name} for {room_id} failed: {response}")
        content = render.image(reply, image, response.content_uri, keys)
        return await self._send(room_id, content, txn)

    def edit_token_for(self, receipt: str) -> str | None:
        """A delivered reply's receipt is its event id, which an m.replace edit names."""
        return receipt if receipt.startswith("$") else None

    async def show_partial(self, message: IncomingMessage, text: str, edit_token: str | None) -> str | None:
        await self._ready.wait()
        body = render.notice(text + render.DRAFT_MARK)
        if edit_token is None:
            content = render.new_message(body, message.extra, message.platform_message_id)
            # Deterministic: a draft re-sent after a crash is deduplicated by the homeserver.
            return await self._send(message.chat_id, content, _txn(message.platform_message_id, "draft"))
        await self._send(message.chat_id, render.edit(edit_token, body), uuid.uuid4().hex)
        return edit_token

    async def typing(self, message: IncomingMessage) -> None:
        await self._ready.wait()
        await self._typing(message.chat_id, True)

    async def _typing(self, room_id: str, on: bool) -> None:
        response = await self._client().room_typing(room_id, on, timeout=SYNC_TIMEOUT_MS)
        if isinstance(response, ErrorResponse):
            log.warning("typing notice in %s failed: %s", room_id, response)

    async def _send(self, room_id: str, content: dict[str, Any], txn: str) -> str:
        client = self._client()
        # One send at a time per room: a late partial edit can never overtake the final text.
        async with self._room_locks.setdefault(room_id, asyncio.Lock()):
            room = client.rooms.get(room_id)
            if room is not None and room.encrypted:
                await self._crypto_housekeeping()
            response = await client.room_send(
                room_id, "m.room.message", content, tx_id=txn, ignore_unverified_devices=True
            )
        if not isinstance(response, RoomSendResponse):
            raise MatrixSendError(f"sending to {room_id} (transaction {txn}) failed: {response}")
        self._remember_own(response.event_id, True)
        return response.event_id

    async def _crypto_housekeeping(self) -> None:
        """What nio's sync_forever does between syncs: publish, query and claim keys; send to-device."""
        client = self._client()
        async with self._keys_lock:
            if client.should_upload_keys:
                await _checked(client.keys_upload(), "uploading keys")
            if client.should_query_keys:
                await _checked(client.keys_query(), "querying device keys")
            if client.should_claim_keys:
                await _checked(client.keys_claim(client.get_users_for_key_claiming()), "claiming one-time keys")
            for response in await client.send_to_device_messages():
                if isinstance(response, ErrorResponse):
                    log.error("sending a to-device message failed: %s", response)

    def _client(self) -> AsyncClient:
        if self.client is None:
            raise LocalProtocolError("the Matrix adapter is not connected")
        return self.client


async def _checked(call: Any, what: str) -> None:
    with contextlib.suppress(LocalProtocolError):  # nothing to do after all (another task just did it)
        response = await call
        if isinstance(response, ErrorResponse):
            log.error("%s failed: %s", what, response)


def _after_own_join(events: list[Event], user_id: str) -> list[Event]:
    """Events since we were invited (or, without an invite in this timeline, since our last join): what came
    before is history, not questions. A person who invites Confide and asks at once, before it has joined, is
    answered."""
    start, invited = 0, False
    for index, event in enumerate(events):
        if not (isinstance(event, RoomMemberEvent) and event.state_key == user_id):
            continue
        if event.membership == "invite":
            start, invited = index + 1, True
        elif event.membership == "join" and event.prev_membership != "join":
            if not (invited and event.prev_membership == "invite"):
                start = index + 1
            invited = False
        elif event.membership in ("leave", "ban"):
            start, invited = index + 1, False
    return events[start:]


def _txn(event_id: str, purpose: str) -> str:
    return f"confide-{hashlib.sha256(event_id.encode()).hexdigest()[:32]}-{purpose}"
