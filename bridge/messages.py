"""The core's typed messages: what adapters put in, what the pipeline sends out, what the index holds."""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator


def utcnow() -> datetime:
    return datetime.now(UTC)


class Attachment(BaseModel):
    name: str
    mime_type: str = "application/octet-stream"
    size: int | None = None
    path: str | None = Field(None, description="Where the adapter saved it, if it did")
    url: str | None = None

    @property
    def is_media(self) -> bool:
        """A photo, voice message or video: nothing Confide imports, so adapters need not download it."""
        return self.mime_type.startswith(("image/", "audio/", "video/"))


class Heard(BaseModel):
    """What a voice message was understood to say, and the file it came in (bridge/intake/hearing.py)."""

    text: str
    file: str


class IncomingMessage(BaseModel):
    """One message a person sent to Confide on some platform."""

    channel: str
    chat_id: str
    sender: str = Field(description="Platform account of the sender, e.g. a Telegram user id")
    platform_message_id: str
    text: str = ""
    time: datetime = Field(default_factory=utcnow)
    reply_to: str | None = Field(None, description="Platform id of the message this one answers")
    thread_id: str | None = None
    is_direct: bool = True
    mentions_bot: bool = False
    replies_to_bot: bool = False
    from_bot_itself: bool = False
    sender_proven: bool = Field(
        True,
        description="The sender is proven by the platform itself (a login, a signature Confide verified); False "
        "where only another server's word vouches for it (mail by Authentication-Results), or a signature that does "
        "not cover what a command rests on (adapters/email/auth.py). Commands that change a history need True.",
    )
    attachments: list[Attachment] = Field(default_factory=list)
    heard: Heard | None = Field(None, description="A voice message: what was understood, once (its text is that)")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="The platform's own (where to reply): the core hands it back, never reads it"
    )

    @model_validator(mode="before")
    @classmethod
    def _heard_was_an_extra(cls, data: Any) -> Any:
        """An inbox row written before `heard` was a field kept it in `extra`: read forward, not lost."""
        if isinstance(data, dict) and isinstance(extra := data.get("extra"), dict) and "heard" in extra:
            extra = dict(extra)
            data = {**data, "extra": extra, "heard": data.get("heard") or extra.pop("heard")}
        return data

    @property
    def account(self) -> str:
        return f"{self.channel}:{self.sender}"

    @property
    def chat_key(self) -> str:
        return f"{self.channel}:{self.chat_id}"


class Citation(BaseModel):
    """Where a fact came from, enough for the person to find it again."""

    number: int
    source: str
    conversation: str = ""
    author: str = ""
    time: datetime | None = None
    link: str | None = None
    excerpt: str = ""
    claims: list[str] = Field(default_factory=list)  # the answer's sentences this excerpt says (/sources)

    def label(self) -> str:
        when = self.time.strftime("%Y-%m-%d %H:%M") if self.time else "undated"
        where = " · ".join(p for p in (self.conversation, self.author) if p)
        ref = self.link or self.source
        return f"[{self.number}] {when} · {where} · {ref}" if where else f"[{self.number}] {when} · {ref}"


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Image(BaseModel):
    """A picture sent with a reply (a chart): PNG, kept base64 in the outbox's JSON so it is queued, and
    survives a crash, in the same transaction as the reply's text."""

    name: str = Field(description="File name, e.g. compare.png")
    alt: str = Field(description="What it shows, in words: caption, alt text, the console's line")
    png_base64: str

    @classmethod
    def png(cls, name: str, alt: str, data: bytes) -> Image:
        """Refused (ValueError) unless it is a PNG with its header, so no platform is handed a broken picture."""
        if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
            raise ValueError(f"{name} is not a PNG")
        return cls(name=name, alt=alt, png_base64=base64.b64encode(data).decode("ascii"))

    @property
    def data(self) -> bytes:
        return base64.b64decode(self.png_base64)

    @property
    def size(self) -> tuple[int, int]:
        """Width and height from the PNG header (IHDR), which every PNG starts with."""
        width, height = struct.unpack(">II", self.data[16:24])
        return width, height


class OutgoingReply(BaseModel):
    """A reply to one incoming message; `edit_token` names a partial message to replace in place."""

    reply_id: str = Field(description="Idempotency key: the same reply is never sent twice")
    channel: str
    chat_id: str
    in_reply_to: str | None = None
    thread_id: str | None = None
    text: str
    citations: list[Citation] = Field(default_factory=list)
    edit_token: str | None = None
    model: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    images: list[Image] = Field(default_factory=list, description="Sent after the text, in order")

    def render_plain(self) -> str:
        if not self.citations:
            return self.text
        return self.text + "\n\nSources:\n" + "\n".join(c.label() for c in self.citations)


class Neighbours(BaseModel):
    """A chat line's neighbours in its conversation, stored with it at ingest (bridge/history/context_windows.py)."""

    before: list[str] = Field(default_factory=list, description="Earlier lines, 'author: text', oldest first")
    after: list[str] = Field(default_factory=list, description="Later lines, in order")
    prev: str | None = Field(None, description="Id of the record just before, if any")
    next: str | None = Field(None, description="Id of the record just after, if any")


# Keys the core reads, typed fields since issue 21: a payload stored before kept them in `extra`.
_CORE_KEYS = ("session", "passage", "page", "audio", "transcribed", "quoted", "signature")
_NEIGHBOUR_KEYS = ("before", "after", "prev", "next")


class HistoryRecord(BaseModel):
    """One piece of a person's history, as indexed."""

    id: str = Field(description="Stable id derived from the source, so re-imports add nothing")
    person: str
    channel: str
    conversation: str
    author: str
    time: datetime
    text: str
    source: str = Field(description="Where it came from: file, chat export, mailbox, live chat")
    link: str | None = Field(None, description="Platform message id or URL the person can follow")
    session: str | int | None = Field(None, description="An export's session (a day's talk): windows stay inside it")
    passage: int | None = Field(None, description="Which passage of a long text split at ingest (1, 2, ...)")
    page: int | None = Field(None, description="Page of the document it was read from")
    audio: str | None = Field(None, description="A voice note's file inside the import: transcribed before indexing")
    transcribed: bool = Field(False, description="Its text is what a voice message was heard to say")
    quoted: str | None = Field(None, description="What the author quoted from others: stored, not its own words")
    signature: str | None = Field(None, description="The author's signature block: stored, not its own words")
    neighbours: Neighbours | None = Field(None, description="A chat line's neighbours; None for documents")
    language: str | None = Field(
        None, description="The language it is written in (ISO 639-1), told when it is indexed; None: not known"
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="The importer's or platform's own details (attachments, links, edits): stored and shown, never a "
        "key the core acts on",
    )

    @model_validator(mode="before")
    @classmethod
    def _core_keys_were_extras(cls, data: Any) -> Any:
        """A payload indexed before these were fields kept them in `extra`: read forward, not lost."""
        if not isinstance(data, dict) or not isinstance(extra := data.get("extra"), dict):
            return data
        if not any(k in extra for k in (*_CORE_KEYS, *_NEIGHBOUR_KEYS)):
            return data
        extra = dict(extra)
        lifted = {k: extra.pop(k) for k in _CORE_KEYS if k in extra and not data.get(k)}
        around = {k: extra.pop(k) for k in _NEIGHBOUR_KEYS if k in extra}
        if around and not data.get("neighbours"):
            lifted["neighbours"] = around
        return {**data, **lifted, "extra": extra}

    def citation(self, number: int) -> Citation:
        excerpt = self.text if len(self.text) <= 160 else self.text[:157] + "..."
        return Citation(
            number=number,
            source=self.source,
            conversation=self.conversation,
            author=self.author,
            time=self.time,
            link=self.link,
            excerpt=excerpt,
        )
