"""What the core asks of a platform adapter, and the one thing it offers adapters: the inbox."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from bridge.messages import IncomingMessage, OutgoingReply


@dataclass(frozen=True)
class Capabilities:
    can_edit: bool = False  # can replace a sent message in place, so answers may stream
    edit_interval_s: float = 1.0


class InboxPort(Protocol):
    async def put(self, message: IncomingMessage) -> bool: ...


class Adapter(Protocol):
    channel: str
    capabilities: Capabilities

    @property
    def bot_names(self) -> tuple[str, ...]:
        """How people address the bot in a group (@name); may change once the adapter has logged in."""

    async def run(self, inbox: InboxPort) -> None:
        """Receive platform events until cancelled; acknowledge each only after `inbox.put` returned."""

    async def deliver(self, reply: OutgoingReply) -> str | None:
        """Send (or finish editing) a reply; returns the platform's id for it. Must be idempotent on reply_id."""

    async def show_partial(self, message: IncomingMessage, text: str, edit_token: str | None) -> str | None:
        """Show a growing answer; returns the token to edit next time (None if the adapter cannot)."""

    async def typing(self, message: IncomingMessage) -> None:
        """Tell the person we are working on it, where the platform can."""


class Terminal(Adapter, Protocol):
    """An adapter that `confide chat` runs in the foreground until its input ends (the console)."""

    interactive: bool
    finished: asyncio.Event

    def watch_idle(self, is_idle: Callable[[], Awaitable[bool]]) -> None:
        """How the adapter learns that everything it accepted is answered and delivered."""
