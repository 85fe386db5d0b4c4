"""What one `confide serve` process does: `all` (the default), `gateway` or `worker` (CONFIDE_ROLE, --role).

A gateway holds platform connections (the Telegram poller, Matrix sync, an IMAP mailbox, the SMTP server): it puts
what arrives in the inbox and delivers the replies of the outbox. A worker holds no connection: it takes messages
from the inbox (bridge/dispatch/inbox.py: claims under leases) and answers them into the outbox; run as many as
the models can feed. Both share the state on PostgreSQL.

Only one gateway per platform account may hold its connection, enforced by a lease in the state store (`gateways`),
not hoped for: a second gateway waits until the first one's lease runs out, then takes over. The holder also says
there what workers need to know of the platform (`bot_names`: how people address the bot in a group).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Literal

from bridge.intake.adapter import Capabilities, InboxPort
from bridge.messages import IncomingMessage, OutgoingReply
from bridge.state.store import Connection, StateStore, clock

log = logging.getLogger(__name__)
Role = Literal["all", "gateway", "worker"]


class GatewayLost(RuntimeError):
    """Another process took over a platform account this gateway held (it stalled past its lease)."""


class RemoteChannel:
    """A platform as a worker sees it: no connection of its own; how the bot is addressed comes from the gateway
    that holds the account. Answers are not streamed (no draft to edit from here): the reply goes whole."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.capabilities = Capabilities()
        self.names: tuple[str, ...] = ()

    @property
    def bot_names(self) -> tuple[str, ...]:
        return self.names

    async def run(self, inbox: InboxPort) -> None:
        raise RuntimeError(f"a worker holds no {self.channel} connection")

    async def deliver(self, reply: OutgoingReply) -> str | None:
        raise RuntimeError(f"a worker delivers nothing on {self.channel}: its gateway does")

    async def show_partial(self, message: IncomingMessage, text: str, edit_token: str | None) -> str | None:
        return None

    async def typing(self, message: IncomingMessage) -> None:
        return None


class Gateways:
    """The `gateways` table: which process holds each platform account, until when, and its bot names."""

    def __init__(self, db: StateStore, owner: str, lease_s: float) -> None:
        self._db = db
        self.owner = owner
        self.lease_s = lease_s

    async def try_take(self, channel: str) -> bool:
        """Take the account, or keep it: True if this process holds it now."""

        def take(conn: Connection) -> bool:
            now = clock(conn, self._db.dialect)
            cursor = conn.execute(
                "INSERT INTO gateways (channel, owner, lease_until) VALUES (?, ?, ?) ON CONFLICT (channel) DO UPDATE"
                " SET owner=excluded.owner, lease_until=excluded.lease_until"
                " WHERE gateways.owner = excluded.owner OR gateways.lease_until < ?",
                (channel, self.owner, now + self.lease_s, now),
            )
            return cursor.rowcount == 1

        return await self._db.run(take)

    async def take(self, channel: str) -> None:
        """Wait until this process holds the account (at once when nobody else does)."""
        waited = False
        while not await self.try_take(channel):
            if not waited:
                log.warning("%s is held by another gateway; this one waits until its lease runs out", channel)
                waited = True
            await asyncio.sleep(self.lease_s / 3)
        if waited:
            log.warning("%s taken over by this gateway", channel)

    async def keep(self, names: dict[str, tuple[str, ...]]) -> None:
        """Renew the leases on these accounts, with their bot names; GatewayLost if one was taken over."""

        def renew(conn: Connection) -> list[str]:
            lost = []
            until = clock(conn, self._db.dialect) + self.lease_s
            for channel, bot_names in names.items():
                cursor = conn.execute(
                    "UPDATE gateways SET lease_until=?, bot_names=? WHERE channel=? AND owner=?",
                    (until, json.dumps(list(bot_names)), channel, self.owner),
                )
                if cursor.rowcount != 1:
                    lost.append(channel)
            return lost

        lost = await self._db.run(renew)
        if lost:
            raise GatewayLost(f"{', '.join(lost)} was taken over by another gateway while this one stalled")

    async def release(self, channels: list[str]) -> None:
        """A stop of our own: the accounts are free at once (another gateway need not wait out the lease)."""

        def free(conn: Connection) -> None:
            for channel in channels:
                conn.execute("DELETE FROM gateways WHERE channel=? AND owner=?", (channel, self.owner))

        await self._db.run(free)

    async def bot_names(self) -> dict[str, tuple[str, ...]]:
        def read(conn: Connection) -> dict[str, tuple[str, ...]]:
            rows = conn.execute("SELECT channel, bot_names FROM gateways").fetchall()
            return {str(channel): tuple(json.loads(names)) for channel, names in rows}

        return await self._db.run(read)
