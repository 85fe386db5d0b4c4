"""Delivery drains the outbox whatever its size: a burst larger than one page is delivered in full."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from bridge.dispatch.dispatcher import DELIVERY_PAGE
from bridge.dispatch.outbox import enqueue_reply
from bridge.messages import OutgoingReply
from bridge.state.db import StateDB
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import Harness
from tests.helpers import eventually, model_for


async def test_more_replies_than_one_page_left_by_a_previous_run_are_all_delivered(
    fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    count = DELIVERY_PAGE + 50
    h = harness_factory({"main": model_for(fake_llm)})
    db = StateDB(h.settings.state_path)
    await db.open()
    replies = [OutgoingReply(reply_id=f"r{n}", channel="telegram", chat_id="100", text=f"reply {n}")
               for n in range(count)]  # fmt: skip

    def left_behind(conn: sqlite3.Connection) -> None:
        for reply in replies:
            enqueue_reply(conn, reply, None)

    await db.run(left_behind)
    await db.close()
    async with h:  # one wake-up at start-up, no new reply after it
        await eventually(lambda: len(h.adapter.delivered) == count, within_s=30)
    assert [r.text for r in h.adapter.delivered] == [f"reply {n}" for n in range(count)]
