"""The bridge at work: dispatch from the inbox, delivery from the outbox; bridge/dispatch/handler.py handles each
message.

One task per chat with pending messages works that chat's messages in order; chats run side by side,
bounded only by each model's concurrency. A finished message and its reply are committed together,
so after a crash unfinished messages are worked again and no reply is queued twice.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from bridge.dispatch import reanswer
from bridge.dispatch.at_work import working_on
from bridge.dispatch.handler import MessageHandler
from bridge.dispatch.inbox import Claimed, LeaseLost
from bridge.dispatch.outbox import OUTBOX_CHANNEL
from bridge.dispatch.roles import GatewayLost, Gateways, RemoteChannel, Role
from bridge.intake.adapter import Adapter, SharesIntake, StopsIntake
from bridge.intake.hearing import HearingStage
from bridge.language.catalog import speaking
from bridge.messages import IncomingMessage
from bridge.services import Services
from bridge.state.persons import PersonStore

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # failures of one message's handling before the person is told it failed
# Deaths of the process while one message was at work (bridge/dispatch/at_work.py) before it is given up: a message that
# takes the whole process down each time (it never fails in Python, so never counts as failed) must not do so forever.
MAX_STARTS = 10
MAX_DELIVERY_ATTEMPTS = 8
DELIVERY_PAGE = 100  # replies read from the outbox at a time
FOLLOW_GATEWAYS_S = 5.0


def _shares(adapter: Adapter) -> bool:
    return isinstance(adapter, SharesIntake) and adapter.shares_intake


class Dispatcher:
    """`role` (bridge/dispatch/roles.py): `worker` works messages and holds no connection (its adapters are
    RemoteChannels); `gateway` runs the adapters' intake and delivery and works no message; `all` does both."""

    def __init__(self, services: Services, adapters: list[Adapter], role: Role = "all") -> None:
        self.role = role
        self.works, self.connects = role != "gateway", role != "worker"
        self.inbox = services.inbox
        self.outbox = services.outbox
        self.adapters = {a.channel: a for a in adapters}
        self.metrics = services.metrics
        self._persons, self._directory = PersonStore(services.db), services.directory
        self._db = services.db
        # One process holds a SQLite file's data directory, and every account with it; on PostgreSQL a lease does.
        shared = services.db.dialect == "postgresql"
        self._gateways = Gateways(services.db, self.inbox.owner, self.inbox.lease_s) if shared else None
        # Where other processes share the inbox, take no more chats than this one's model slots can soon serve:
        # a chat taken here waits for a slot under this process's lease, where an idle worker could answer it.
        models = services.models
        slots = sum(models.settings(n).concurrency * len(models.settings(n).base_urls) for n in models.names())
        self._chat_cap = max(2, 2 * slots) if shared else None
        self._held: set[str] = set()  # platform accounts this process holds (connects to, delivers for)
        self.hearing = HearingStage(services.options.hearing, services.directory, services.inbox)
        self.handler = MessageHandler(services, self.adapters, self._wake_delivery)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._delivery_events = {channel: asyncio.Event() for channel in self.adapters}
        self._stopping = False  # a graceful stop began: no message is started any more

    async def run(self) -> None:
        """Recover, then dispatch, deliver and run every adapter until cancelled (as far as the role goes)."""
        if self.works:
            await self.inbox.recover()
        if self.connects:  # each account whose connection must be one: this process must hold it first
            for channel, adapter in self.adapters.items():
                if not _shares(adapter):
                    await self._hold(channel)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._persons.watch(self._directory.update), name="confide-persons-watch")
                if self.works:
                    group.create_task(self._dispatch(), name="confide-dispatch")
                    group.create_task(self.inbox.keep_leases(), name="confide-leases")
                    group.create_task(self.inbox.watch(), name="confide-inbox-watch")
                    group.create_task(self._pay_owed_answers(), name="confide-reanswer")
                if self.connects:
                    for channel, adapter in self.adapters.items():
                        group.create_task(adapter.run(self.inbox), name=f"confide-adapter-{channel}")
                        group.create_task(self._deliver_when_held(channel, adapter), name=f"confide-deliver-{channel}")
                    if self._gateways is not None:
                        group.create_task(self._hold_accounts(self._gateways), name="confide-gateway-leases")
                        group.create_task(self._hear_replies(), name="confide-outbox-listen")
                else:
                    group.create_task(self._follow_gateways(), name="confide-gateways")
                self.metrics.ready = True
        finally:
            self.metrics.ready = False
            # Chat tasks live outside the group (they come and go); they stop with the bridge.
            chats = list(self._running.values())
            for task in chats:
                task.cancel()
            await asyncio.gather(*chats, return_exceptions=True)
            # A stop we carried out ourselves was no message's doing: what it cut off starts again with a clean slate.
            # Only a death that skips this (a crash, SIGKILL, the OOM killer) counts against the messages at work.
            if self.works:
                await self.inbox.release_taken()
            if self.connects and self._gateways is not None:
                await self._gateways.release(sorted(self._held))

    # -- roles -----------------------------------------------------------------------------------

    async def _hold(self, channel: str) -> None:
        """Hold the account (wait while another gateway does); on SQLite this process holds them all."""
        if self._gateways is not None:
            await self._gateways.take(channel)
        self._held.add(channel)

    async def _deliver_when_held(self, channel: str, adapter: Adapter) -> None:
        """Deliver this account's replies once this gateway holds it (at once for a connection that must be one:
        held before it started; a shared intake's gateway waits its turn to deliver)."""
        if channel not in self._held:
            await self._hold(channel)
        self._delivery_events[channel].set()  # deliver what a previous run left behind
        await self._deliver(adapter)

    async def _hold_accounts(self, gateways: Gateways) -> None:
        """Renew this gateway's leases on its accounts (and say how the bot is addressed) every third of a lease;
        one taken over ends the process: two connections to one account must never run."""
        renewed = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(gateways.lease_s / 3)
            try:
                held = {
                    channel: adapter.bot_names for channel, adapter in self.adapters.items() if channel in self._held
                }
                await gateways.keep(held)
                renewed = asyncio.get_running_loop().time()
            except GatewayLost:
                raise
            except Exception:
                log.exception("renewing this gateway's accounts failed; trying again")
                if asyncio.get_running_loop().time() - renewed > gateways.lease_s:  # another may hold them by now
                    raise GatewayLost("this gateway could not renew its accounts for longer than a lease") from None

    async def _hear_replies(self) -> None:
        """A gateway delivers what workers queue: woken by their NOTIFY, and looking every second besides."""

        def wake_all() -> None:
            for event in self._delivery_events.values():
                event.set()

        listening = asyncio.create_task(self._db.listen(OUTBOX_CHANNEL, wake_all), name="confide-outbox-notify")
        try:
            while True:
                await asyncio.sleep(1.0)
                wake_all()
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)

    async def _follow_gateways(self) -> None:
        """A worker addresses the bot as its gateways say (@name in a group), read every few seconds."""
        while True:
            try:
                names = await self._gateways.bot_names() if self._gateways is not None else {}
                for channel, adapter in self.adapters.items():
                    if isinstance(adapter, RemoteChannel):
                        adapter.names = names.get(channel, ())
            except Exception:
                log.exception("reading the gateways' bot names failed; trying again")
            await asyncio.sleep(FOLLOW_GATEWAYS_S)

    # -- dispatch -------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while not self._stopping:
            self.inbox.changed.clear()
            for chat_key in await self.inbox.pending_chats(exclude=set(self._running)):
                if self._chat_cap is not None and len(self._running) >= self._chat_cap:
                    break  # the rest for another process, or for this one once a chat is done
                if chat_key.partition(":")[0] not in self.adapters:
                    continue  # that platform is not running in this process; its messages wait
                self._running[chat_key] = asyncio.create_task(self._work_chat(chat_key), name=f"chat-{chat_key}")
            await self.inbox.changed.wait()

    async def _work_chat(self, chat_key: str) -> None:
        try:
            while not self._stopping and (claimed := await self.inbox.claim_next(chat_key)) is not None:
                await self._work_message(claimed)
        except Exception:
            log.exception("chat %s stopped on an unexpected error; it resumes on the next message", chat_key)
        finally:
            self._running.pop(chat_key, None)
            self.inbox.changed.set()

    async def _work_message(self, claimed: Claimed) -> None:
        message = claimed.message
        if claimed.interrupted >= MAX_STARTS:
            log.error("the process died %d times while message %s/%s was at work; giving up", claimed.interrupted,
                      message.channel, message.platform_message_id)  # fmt: skip
            with speaking(await self._language(message)):
                await self.handler.give_up(claimed, interrupted=True)
            return
        try:
            with working_on(partial(self.inbox.at_work, claimed.inbox_id)), speaking(await self._language(message)):
                heard = await self.hearing.hear(claimed)
                if heard.refusal is not None:
                    await self.handler.not_heard(heard.claimed, heard.refusal)
                    await self.hearing.discard(heard)
                    return
                if heard.claimed.message.heard is None:
                    await self.handler.handle(heard.claimed)
                    return
                with speaking(await self._language(heard.claimed.message)):  # what the voice message said
                    await self.handler.handle(heard.claimed)
        except LeaseLost as lost:  # stalled past its lease: the process that took it over answers it
            log.warning("%s", lost)
        except Exception:
            self.metrics.error("message")
            failures = await self.inbox.failed(claimed.inbox_id)
            log.exception(
                "message %s/%s failed (failure %d/%d)",
                message.channel,
                message.platform_message_id,
                failures,
                MAX_ATTEMPTS,
            )
            if failures >= MAX_ATTEMPTS:
                with speaking(await self._language(message)):
                    await self.handler.give_up(claimed)
            else:
                await asyncio.sleep(0.5 * failures)

    async def _language(self, message: IncomingMessage) -> str | None:
        """The reply's language; English where even that cannot be told (the state store failing): a reply in
        English beats none."""
        try:
            return await self.handler.language_for(message)
        except Exception:
            log.exception("telling the reply language of %s/%s failed", message.channel, message.platform_message_id)
            return None

    # -- answers owed after a fallback -------------------------------------------------------------

    async def _pay_owed_answers(self) -> None:
        """Every so often, answer the questions that got the fallback, as soon as their model answers again."""
        while not self._stopping:
            await asyncio.sleep(self.handler.options.reanswer_every_s)
            try:
                for owed in await reanswer.owed(self.inbox):
                    if self._stopping or not self.handler.pipeline.models.is_up(owed.model):
                        continue
                    if not await self.handler.pay(owed):
                        break  # still down: the rest waits for the next round
            except Exception:
                log.exception("answering questions that got the fallback failed; trying again later")

    # -- stopping --------------------------------------------------------------------------------

    async def drain(self, grace_s: float) -> None:
        """A graceful stop, before `run` is cancelled: take no new messages, let the answers in flight finish and
        the queued replies go out, all within `grace_s`; what is left is worked on after the next start."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        self._stopping = True
        self.metrics.ready = False
        self.inbox.changed.set()  # the dispatcher wakes up and ends
        for adapter in self.adapters.values():
            if isinstance(adapter, StopsIntake):
                try:
                    await adapter.stop_intake()
                except Exception:
                    log.exception("stopping the intake of %s failed; it is cancelled with the rest", adapter.channel)
        in_flight = list(self._running.values())
        finished = cut = 0
        if in_flight:
            done, pending = await asyncio.wait(in_flight, timeout=max(0.0, deadline - loop.time()))
            finished, cut = len(done), len(pending)
        while self.connects and loop.time() < deadline and await self._undelivered(deliverable_only=True):
            for event in self._delivery_events.values():
                event.set()
            await asyncio.sleep(0.05)
        log.info(
            "stopped within %.1f s: %d chat(s) finished their answer, %d cut off; %d message(s) and %d reply(ies) "
            "wait for the next start",
            grace_s - max(0.0, deadline - loop.time()),
            finished,
            cut,
            await self.inbox.unfinished(),
            await self._undelivered(),
        )

    async def _undelivered(self, deliverable_only: bool = False) -> int:
        """Replies queued and not sent on the accounts this process delivers for (for `deliverable_only`, none waiting
        out a retry's back-off counts)."""
        counts = [await self.outbox.unsent(channel, ready_only=deliverable_only) for channel in sorted(self._held)]
        return sum(counts)

    # -- delivery --------------------------------------------------------------------------------

    def _wake_delivery(self, channel: str) -> None:
        self._delivery_events[channel].set()

    async def _deliver(self, adapter: Adapter) -> None:
        event = self._delivery_events[adapter.channel]
        while True:
            await event.wait()
            event.clear()
            page = await self.outbox.pending(adapter.channel, DELIVERY_PAGE)
            if len(page) == DELIVERY_PAGE:
                event.set()  # a burst of replies: more wait beyond this page, with no new event to say so
            for pending in page:
                try:
                    receipt = await adapter.deliver(pending.reply)
                except Exception as exc:
                    self.metrics.error("delivery")
                    attempts = pending.attempts + 1
                    give_up = attempts >= MAX_DELIVERY_ATTEMPTS
                    log.exception(
                        "delivering reply %s on %s failed (attempt %d)",
                        pending.reply.reply_id,
                        adapter.channel,
                        attempts,
                    )
                    await self.outbox.mark_attempt_failed(pending.outbox_id, repr(exc), give_up)
                    if not give_up:
                        asyncio.get_running_loop().call_later(min(2**attempts, 60), event.set)
                    break
                await self.outbox.mark_sent(pending.outbox_id, receipt)
