"""Retrieval units for chat history: each message keeps its own place, but is indexed with its neighbours.

A short chat message ("yes, the 14th!") rarely holds a fact alone. Measured on LoCoMo (benchmarks/locomo.py),
indexing each message twice, alone and with the messages around it, and fusing both with BM25 finds far more
than either alone, while each hit still costs one place in the model's context. The neighbours' record ids are
kept so a search can lift a message next to a strong hit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from datetime import timedelta

from bridge.messages import HistoryRecord, Neighbours

BEFORE, AFTER = 2, 1
# A pause this long starts a new conversation: context does not reach across it.
SESSION_GAP = timedelta(hours=6)


def is_chat(record: HistoryRecord) -> bool:
    """Whether `with_context` windowed the record as a chat message (it then has neighbours, perhaps none)."""
    return record.neighbours is not None


def line(record: HistoryRecord) -> str:
    return f"{record.author}: {record.text}" if record.author else record.text


def with_context(
    records: Iterable[HistoryRecord], before: int = BEFORE, after: int = AFTER, *, chat: bool
) -> Iterator[HistoryRecord]:
    """Chat records gain `neighbours`: the lines before and after, and the ids of the records either side.

    `chat` is the caller's word (the importer's `chat`) that the records are chat messages; mails and
    documents (chat=False) pass through untouched. Streaming, with a window of before + after + 1 records:
    memory stays bounded for any export size.
    """
    if not chat:
        yield from records
        return
    window: deque[HistoryRecord] = deque()
    emitted = 0  # how many records at the window's start were already yielded (kept only as context)
    for record in records:
        if not record.text.strip():
            yield from _drain(window, emitted, before)
            window, emitted = deque(), 0
            yield record
            continue
        if window and not _same_session(window[-1], record):
            yield from _drain(window, emitted, before)
            window, emitted = deque(), 0
        window.append(record)
        while len(window) - emitted > after:
            yield _annotate(window, emitted, before)
            emitted += 1
        while emitted > before:
            window.popleft()
            emitted -= 1
    yield from _drain(window, emitted, before)


def _drain(window: deque[HistoryRecord], emitted: int, before: int) -> Iterator[HistoryRecord]:
    for index in range(emitted, len(window)):
        yield _annotate(window, index, before)


def _annotate(window: deque[HistoryRecord], index: int, before: int) -> HistoryRecord:
    record = window[index]
    items = list(window)
    earlier = items[max(0, index - before) : index]
    later = items[index + 1 :]
    record.neighbours = Neighbours(
        before=[line(r) for r in earlier],
        after=[line(r) for r in later],
        prev=items[index - 1].id if index > 0 else None,
        next=items[index + 1].id if index + 1 < len(items) else None,
    )
    return record


def _same_session(a: HistoryRecord, b: HistoryRecord) -> bool:
    if a.conversation != b.conversation or a.source != b.source:
        return False
    if a.session is not None or b.session is not None:
        return a.session == b.session
    return abs(b.time - a.time) <= SESSION_GAP


def context_text(record: HistoryRecord, before: int, after: int) -> str:
    """The message first (so an encoder's length limit cuts context, not the message), then its neighbours."""
    around = record.neighbours or Neighbours()
    lines = around.before[-before:] if before else []
    lines += around.after[:after]
    return "\n".join([line(record), *lines])
