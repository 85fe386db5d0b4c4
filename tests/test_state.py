"""The durable inbox and outbox on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from bridge.inbox import Inbox
from bridge.messages import IncomingMessage, OutgoingReply
from bridge.outbox import Outbox
from bridge.state import StateDB


def message(pid: str, chat: str = "c1", text: str = "hi") -> IncomingMessage:
    return IncomingMessage(channel="telegram", chat_id=chat, sender="100", platform_message_id=pid, text=text)


def reply(rid: str) -> OutgoingReply:
    return OutgoingReply(reply_id=rid, channel="telegram", chat_id="c1", text="answer")


async def open_db(path: Path) -> StateDB:
    db = StateDB(path / "state.sqlite3")
    await db.open()
    return db


async def test_put_is_idempotent_on_channel_and_platform_id(tmp_path: Path) -> None:
    db = await open_db(tmp_path)
    inbox = Inbox(db)
    assert await inbox.put(message("1")) is True
    assert await inbox.put(message("1", text="redelivered")) is False
    other_channel = message("1").model_copy(update={"channel": "matrix"})
    assert await inbox.put(other_channel) is True
    assert await inbox.unfinished() == 2
    claimed = await inbox.claim_next("telegram:c1")
    assert claimed is not None and claimed.message.text == "hi"
    await db.close()


async def test_messages_of_a_chat_come_in_order_and_chats_are_separate(tmp_path: Path) -> None:
    db = await open_db(tmp_path)
    inbox = Inbox(db)
    for pid, chat in [("1", "a"), ("2", "b"), ("3", "a"), ("4", "b")]:
        await inbox.put(message(pid, chat))
    assert await inbox.pending_chats(exclude=set()) == ["telegram:a", "telegram:b"]
    assert await inbox.pending_chats(exclude={"telegram:a"}) == ["telegram:b"]
    first = await inbox.claim_next("telegram:a")
    assert first is not None and first.message.platform_message_id == "1"
    await inbox.finish(first.inbox_id, "answered", [])
    second = await inbox.claim_next("telegram:a")
    assert second is not None and second.message.platform_message_id == "3"
    await db.close()


async def test_unfinished_work_survives_a_restart(tmp_path: Path) -> None:
    db = await open_db(tmp_path)
    inbox = Inbox(db)
    await inbox.put(message("1"))
    claimed = await inbox.claim_next("telegram:c1")
    assert claimed is not None and claimed.attempts == 1
    await db.close()  # the process dies while working on it

    db = await open_db(tmp_path)
    inbox = Inbox(db)
    assert await inbox.recover() == 1
    again = await inbox.claim_next("telegram:c1")
    assert again is not None and again.inbox_id == claimed.inbox_id and again.attempts == 2
    await db.close()


async def test_finish_queues_each_reply_once(tmp_path: Path) -> None:
    db = await open_db(tmp_path)
    inbox, outbox = Inbox(db), Outbox(db)
    await inbox.put(message("1"))
    claimed = await inbox.claim_next("telegram:c1")
    assert claimed is not None
    await inbox.finish(claimed.inbox_id, "answered", [reply("r1")])
    await inbox.finish(claimed.inbox_id, "answered", [reply("r1")])  # worked twice after a crash
    pending = await outbox.pending("telegram")
    assert [p.reply.reply_id for p in pending] == ["r1"]
    await outbox.mark_sent(pending[0].outbox_id, "platform-77")
    assert await outbox.pending("telegram") == []
    assert await outbox.unsent("telegram") == 0
    assert await inbox.unfinished() == 0
    await db.close()


async def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    db = await open_db(tmp_path)
    inbox, outbox = Inbox(db), Outbox(db)
    await inbox.put(message("1"))
    claimed = await inbox.claim_next("telegram:c1")
    assert claimed is not None

    def explode(conn: object) -> None:
        raise RuntimeError("disk full")

    try:
        await inbox.finish(claimed.inbox_id, "answered", [reply("r1")], explode)
    except RuntimeError:
        pass
    assert await outbox.pending("telegram") == []
    assert await inbox.unfinished() == 1
    await db.close()
