"""What the core asks of a platform adapter, and what it offers adapters: the inbox, and their own tables."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bridge.language.catalog import N_, say
from bridge.messages import IncomingMessage, OutgoingReply

if TYPE_CHECKING:
    from bridge.intake.persons import PersonDirectory
    from bridge.state.store import PlatformState


@dataclass(frozen=True)
class Capabilities:
    can_edit: bool = False  # can replace a sent message in place, so answers may stream
    edit_interval_s: float = 1.0


NOBODY = N_("In this group: nobody but me.")
SOME_NAMED = N_(
    "This group has {count} member(s) besides me (the platform does not list them all; it names only {names})."
)


@dataclass(frozen=True)
class Members:
    """Who is in a group besides the bot, as far as the platform says: everyone (Matrix), or a count and the few
    it names (Telegram lists only a group's administrators)."""

    names: tuple[str, ...]
    count: int

    def describe(self) -> str:
        if len(self.names) >= self.count:
            return say("In this group: {names}.", names=", ".join(self.names)) if self.names else say(NOBODY)
        if self.names:
            return say(SOME_NAMED, count=self.count, names=", ".join(self.names))
        return say("This group has {count} member(s) besides me (the platform does not list them).", count=self.count)


class InboxPort(Protocol):
    async def put(self, message: IncomingMessage) -> bool:
        """Store a message durably (True if new); raises bridge.ops.diskspace.NoRoom when the disk is nearly full:
        the message was not taken, and the platform should offer it again later."""
        ...

    async def wait_for_room(self) -> None:
        """Return once new messages can be stored (at once, normally): wait here before fetching more."""
        ...

    def has_room(self) -> bool:
        """Whether new messages can be stored now (a server that must answer at once, as SMTP, asks this)."""
        ...


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


@runtime_checkable
class StopsIntake(Protocol):
    """An adapter that can stop taking new messages while it still delivers (optional: a graceful stop uses it).

    The platform keeps what is not taken (an MTA retries after SMTP 421; Telegram and Matrix keep events that
    were not fetched). An adapter without it keeps taking messages into the durable inbox until it is cancelled,
    and they are answered after the next start."""

    async def stop_intake(self) -> None: ...


@runtime_checkable
class EditsSent(Protocol):
    """An adapter that can replace a reply it delivered, named by the receipt its `deliver` returned (optional:
    an answer owed after a fallback then replaces the fallback in place instead of following it)."""

    def edit_token_for(self, receipt: str) -> str | None: ...


@runtime_checkable
class KeepsState(Protocol):
    """An adapter with tables of its own in the state database, declared as its `Platform`'s migrations (optional).

    `assemble` brings those tables to their last migration and hands the adapter its handle on them before the
    Dispatcher exists, so neither `run` nor `deliver` ever finds it missing. The adapter opens no database."""

    async def attach_state(self, state: PlatformState) -> None: ...


@runtime_checkable
class SharesIntake(Protocol):
    """An adapter whose intake several gateways may run at once (optional): an SMTP server (each gateway its own
    address behind the MTA) takes mail whichever gateway holds the account; delivery stays with the one gateway that
    holds it. A connection that must be one (a poller, a sync, a mailbox) does not share."""

    @property
    def shares_intake(self) -> bool: ...


@runtime_checkable
class KnowsPersons(Protocol):
    """An adapter that tells persons from strangers itself (which invitations it accepts, whose files it keeps):
    `assemble` hands it the core's directory, which follows `confide persons add|remove` while Confide runs."""

    def attach_directory(self, directory: PersonDirectory) -> None: ...


@runtime_checkable
class ListsMembers(Protocol):
    """An adapter that can say who is in a group (optional: /share then names them)."""

    async def members(self, chat_id: str) -> Members: ...


class Terminal(Adapter, Protocol):
    """An adapter that `confide chat` runs in the foreground until its input ends (the console)."""

    interactive: bool
    finished: asyncio.Event

    def watch_idle(self, is_idle: Callable[[], Awaitable[bool]]) -> None:
        """How the adapter learns that everything it accepted is answered and delivered."""
