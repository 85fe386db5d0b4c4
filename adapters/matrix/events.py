"""From a Matrix room event to the core's IncomingMessage: text, relations, mentions, attachments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nio import MatrixRoom, RoomMessage

from bridge.messages import Attachment, IncomingMessage

CHANNEL = "matrix"
# The person's own text messages; notices come from bots and are never answered (no bot loops).
ANSWERABLE = frozenset({"m.text", "m.emote", "m.image", "m.file", "m.audio", "m.video"})


def as_dict(value: object) -> dict[str, Any]:
    """A JSON object of an event's content, or an empty one where the sender put something else."""
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Me:
    user_id: str
    display_name: str

    def names(self) -> tuple[str, ...]:
        localpart = self.user_id.removeprefix("@").split(":", 1)[0]
        return tuple(dict.fromkeys(n for n in (self.user_id, self.display_name, localpart) if n))

    def mentioned_in(self, content: dict[str, Any], text: str) -> bool:
        """Only an explicit mention: `m.mentions`, a pill (a matrix.to link in the HTML) or the full user id. A
        display name is a word ("I would never confide in him"), so its mere appearance addresses no one."""
        mentions = content.get("m.mentions")
        if isinstance(mentions, dict) and self.user_id in (mentions.get("user_ids") or []):
            return True
        return self.user_id in text or f"https://matrix.to/#/{self.user_id}" in str(content.get("formatted_body", ""))


def relations(content: dict[str, Any]) -> tuple[str | None, str | None, bool]:
    """(in-reply-to event id, thread root, is an edit)."""
    relates = content.get("m.relates_to")
    if not isinstance(relates, dict):
        return None, None, False
    reply = relates.get("m.in_reply_to")
    reply_to = reply.get("event_id") if isinstance(reply, dict) else None
    thread_root = relates.get("event_id") if relates.get("rel_type") == "m.thread" else None
    if thread_root and relates.get("is_falling_back") and reply_to == thread_root:
        reply_to = None
    return reply_to, thread_root, relates.get("rel_type") == "m.replace"


def strip_reply_fallback(body: str) -> str:
    """Older clients quote the replied-to message as leading "> " lines; the question is what follows."""
    lines = body.split("\n")
    while lines and lines[0].startswith(">"):
        lines.pop(0)
    if lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)


# A file without a stated type: an m.audio is still a voice message (Element records them as audio/ogg).
_DEFAULT_TYPES = {"m.audio": "audio/ogg"}


def _attachments(content: dict[str, Any], msgtype: str) -> list[Attachment]:
    if msgtype in ("m.text", "m.emote", "m.notice"):
        return []
    info = as_dict(content.get("info"))
    url = content.get("url") or as_dict(content.get("file")).get("url")
    return [
        Attachment(
            name=str(content.get("filename") or content.get("body") or "attachment"),
            mime_type=str(info.get("mimetype") or _DEFAULT_TYPES.get(msgtype, "application/octet-stream")),
            size=info.get("size"),
            url=url,
        )
    ]


def to_incoming(event: RoomMessage, room: MatrixRoom, me: Me, replies_to_bot: bool) -> IncomingMessage | None:
    """The message for the inbox, or None for what is not a person's new message (edits, notices)."""
    content = event.source.get("content", {})
    msgtype = content.get("msgtype", "")
    reply_to, thread_root, is_edit = relations(content)
    if is_edit or msgtype not in ANSWERABLE:
        return None
    body = str(content.get("body", ""))
    text = strip_reply_fallback(body) if reply_to else body
    attachments = _attachments(content, msgtype)
    if attachments:
        text = ""  # the body of a file message is its name, not a question
    return IncomingMessage(
        channel=CHANNEL,
        chat_id=room.room_id,
        sender=event.sender,
        platform_message_id=event.event_id,
        text=text,
        time=datetime.fromtimestamp(event.server_timestamp / 1000, UTC),
        reply_to=reply_to,
        thread_id=thread_root,
        is_direct=room.member_count <= 2,
        mentions_bot=bool(me.mentioned_in(content, body)),
        replies_to_bot=replies_to_bot,
        from_bot_itself=event.sender == me.user_id,
        attachments=attachments,
        extra={"room_id": room.room_id, "event_id": event.event_id, "thread_root": thread_root, "sender": event.sender},
    )
