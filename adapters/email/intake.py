"""How much mail is taken at once, so that a flood of strangers' mail neither exhausts memory nor starves a person's.

Two bounds: `Receiving`, SMTP DATA transfers in progress (a mail is held in memory while it arrives; a peer may
hold only a few of them, so one hostile client cannot take every place, and mail whose envelope sender is a person's
address has places of its own, so strangers filling theirs, slowly or not, keep no person's mail waiting), and
`Reading`, mails being parsed and authenticated (a count and their bytes), for SMTP and IMAP alike. Past a bound an
SMTP mail waits a little, then gets 451 4.3.2 and its sender retries later; IMAP mail waits for its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable


class Reading:
    """At most `max_mails` mails, and `max_bytes` of them, read at once (one mail alone always fits)."""

    def __init__(self, max_mails: int, max_bytes: int) -> None:
        self.max_mails, self.max_bytes = max_mails, max_bytes
        self.mails = 0
        self.bytes = 0
        self._changed = asyncio.Condition()

    def _fits(self, size: int) -> bool:
        return self.mails == 0 or (self.mails < self.max_mails and self.bytes + size <= self.max_bytes)

    @contextlib.asynccontextmanager
    async def slot(self, size: int, wait_s: float | None) -> AsyncIterator[bool]:
        """Yields whether the mail was let in within `wait_s` seconds (None: as long as it takes)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._fits(size)), wait_s)
            except TimeoutError:
                admitted = False
            else:
                admitted = True
                self.mails += 1
                self.bytes += size
        try:
            yield admitted
        finally:
            if admitted:
                async with self._changed:
                    self.mails -= 1
                    self.bytes -= size
                    self._changed.notify_all()


class Place:
    """A mail's place among those arriving: `refused` says why it got none. `release()` gives the place back
    before the mail has ended (one read to its end without being kept holds no memory); the peer's share is still
    taken until it ends."""

    def __init__(self, refused: str | None, release: Callable[[], None] = lambda: None) -> None:
        self.refused = refused
        self._release = release
        self._held = refused is None

    def release(self) -> None:
        if self._held:
            self._held = False
            self._release()


class Receiving:
    """At most `max_total` SMTP DATA transfers at once from strangers and as many from persons' addresses (`known`
    envelope senders; a forger of one is judged like anyone once the mail's first MiB is in), and `max_per_peer`
    from one client address unless `unbounded(peer)` (a trusted relay: every mail comes through it)."""

    def __init__(
        self, max_total: int, max_per_peer: int, unbounded: Callable[[str], bool], known: Callable[[str], bool]
    ) -> None:
        self.max_total, self.max_per_peer = max_total, max_per_peer
        self.unbounded, self.known = unbounded, known
        self.per_peer: Counter[str] = Counter()
        self._peer_left = asyncio.Condition()
        self._places = {lane: asyncio.Semaphore(max_total) for lane in (False, True)}

    @contextlib.asynccontextmanager
    async def place(self, peer: str, sender: str | None, wait_s: float) -> AsyncIterator[Place]:
        """A place for one transfer, waited for up to `wait_s` (the peer's share first, then a place of its lane);
        after that, why there is none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        free = self.unbounded(peer)
        async with self._peer_left:
            try:
                await asyncio.wait_for(
                    self._peer_left.wait_for(lambda: free or self.per_peer[peer] < self.max_per_peer), wait_s
                )
            except TimeoutError:
                yield Place(f"{self.per_peer[peer]} mails from {peer} already arriving")
                return
            self.per_peer[peer] += 1
        try:
            places = self._places[bool(sender) and self.known(str(sender))]
            try:
                await asyncio.wait_for(places.acquire(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                yield Place(f"{self.max_total} mails already arriving")
                return
            place = Place(None, places.release)
            try:
                yield place
            finally:
                place.release()
        finally:
            async with self._peer_left:
                self.per_peer[peer] -= 1
                if not self.per_peer[peer]:
                    del self.per_peer[peer]
                self._peer_left.notify_all()
