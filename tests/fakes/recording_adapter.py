"""A platform adapter for tests: messages are injected, replies and partial edits are recorded."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from bridge.intake.adapter import Capabilities, InboxPort, Members
from bridge.messages import IncomingMessage, OutgoingReply


@dataclass
class RecordingAdapter:
    channel: str = "telegram"
    capabilities: Capabilities = field(default_factory=lambda: Capabilities(can_edit=True, edit_interval_s=0.05))
    bot_names: tuple[str, ...] = ("@confide_bot",)
    delivered: list[OutgoingReply] = field(default_factory=list)
    partials: list[tuple[str, str]] = field(default_factory=list)  # (token, text)
    typing_chats: list[str] = field(default_factory=list)
    fail_deliveries: int = 0
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # chat id -> its members' names, for /share
    inbox: InboxPort | None = None
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, inbox: InboxPort) -> None:
        self.inbox = inbox
        self._ready.set()
        await asyncio.Event().wait()

    def disconnect(self) -> None:
        """The platform side survives a crash of the bridge; the next `run` reconnects it."""
        self.inbox = None
        self._ready.clear()

    async def send(self, sender: str, text: str, chat_id: str | None = None, **fields: object) -> IncomingMessage:
        await self._ready.wait()
        assert self.inbox is not None
        message = IncomingMessage(
            channel=self.channel,
            chat_id=chat_id or sender,
            sender=sender,
            platform_message_id=str(fields.pop("platform_message_id", next(self._ids) + 1000)),
            text=text,
            **fields,  # type: ignore[arg-type]
        )
        await self.inbox.put(message)
        return message

    async def deliver(self, reply: OutgoingReply) -> str | None:
        if self.fail_deliveries:
            self.fail_deliveries -= 1
            raise ConnectionError("platform unreachable")
        if any(r.reply_id == reply.reply_id for r in self.delivered):
            return reply.reply_id  # idempotent on reply_id, as a platform's transaction id is
        self.delivered.append(reply)
        return reply.edit_token or f"sent-{len(self.delivered)}"

    async def show_partial(self, message: IncomingMessage, text: str, edit_token: str | None) -> str | None:
        token = edit_token or f"draft-{message.platform_message_id}"
        self.partials.append((token, text))
        return token

    async def typing(self, message: IncomingMessage) -> None:
        self.typing_chats.append(message.chat_id)

    async def members(self, chat_id: str) -> Members:
        names = self.groups[chat_id]  # a KeyError is a platform that cannot say: the bridge copes
        return Members(names, len(names))

    def texts(self) -> list[str]:
        return [r.text for r in self.delivered]
