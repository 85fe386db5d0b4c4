"""When a taken message is really at work: the moment a death of the process starts counting against it.

A message is taken from the inbox long before anything can go wrong with it: every chat with pending messages is
taken at start-up, while a model serves only a few requests at a time, so most of them wait for a slot. A restart
during that wait says nothing about the message. The worker opens `working_on` around each message; the model
client calls `now_at_work()` once its request is on its way (after the wait for a slot), and a command, or a voice
message being heard, as it starts. The first call records it (bridge.dispatch.inbox.Inbox.at_work); later ones cost
nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class _Mark:
    def __init__(self, record: Callable[[], Awaitable[None]]) -> None:
        self.record = record
        self.done = False


# A context variable, so that tasks a message's work starts (the two answers of /compare) share its mark.
_current: ContextVar[_Mark | None] = ContextVar("confide_at_work", default=None)


@contextmanager
def working_on(record: Callable[[], Awaitable[None]]) -> Iterator[None]:
    """Within this block, `now_at_work()` calls `record` once."""
    token = _current.set(_Mark(record))
    try:
        yield
    finally:
        _current.reset(token)


async def now_at_work() -> None:
    mark = _current.get()
    if mark is None or mark.done:
        return
    mark.done = True  # first: two answers of one /compare starting together record it once
    await mark.record()
