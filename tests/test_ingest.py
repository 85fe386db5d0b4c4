"""The ingestion driver: chat context windows, idempotence, resuming, problems, and no damage on failure."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.history.context_windows import context_text, with_context
from bridge.history.importers.base import Problem, WrongKind
from bridge.history.importers.registry import open_importer
from bridge.history.index import HistoryIndex, lift_neighbours
from bridge.history.ingest import ingest
from bridge.history.store import Hit, from_payload
from bridge.messages import HistoryRecord, Neighbours
from tests.import_fixtures import ANDROID_US, write_whatsapp_txt

T0 = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)


def chat(rid: str, minutes: float, text: str = "", conversation: str = "Anna") -> HistoryRecord:
    return HistoryRecord(
        id=rid, person="alice", channel="whatsapp", conversation=conversation, author=rid.upper(),
        time=T0 + timedelta(minutes=minutes), text=text or f"message {rid}", source="whatsapp:anna.zip",
    )  # fmt: skip


def test_context_windows_stay_inside_one_conversation_and_session() -> None:
    records = [
        chat("a", 0), chat("b", 1), chat("c", 2), chat("d", 3),
        chat("e", 600),  # ten hours later: a new session
        chat("x", 601, conversation="Ben"),
        chat("m", 602, text=" "),  # media only: no context of its own, and it ends the window
        chat("y", 603, conversation="Ben"),
    ]  # fmt: skip
    out = {r.id: r for r in with_context(records, chat=True)}
    assert [r.id for r in with_context(records[:0], chat=True)] == []
    assert list(out) == ["a", "b", "c", "d", "e", "x", "m", "y"]
    assert out["a"].neighbours.before == [] and out["a"].neighbours.after == ["B: message b"]
    assert out["c"].neighbours.before == ["A: message a", "B: message b"]
    assert out["c"].neighbours.after == ["D: message d"]
    assert out["d"].neighbours.after == [] and out["d"].neighbours.next is None
    assert (out["c"].neighbours.prev, out["c"].neighbours.next) == ("b", "d")
    assert out["e"].neighbours.before == [] and out["e"].neighbours.prev is None
    assert out["x"].neighbours.before == [] and out["x"].neighbours.next is None
    assert out["m"].neighbours is None and out["y"].neighbours.prev is None
    assert context_text(out["c"], before=1, after=1) == "C: message c\nB: message b\nD: message d"


def test_context_windows_stream_through_a_long_chat() -> None:
    def endless() -> Iterator[HistoryRecord]:
        for i in range(20_000):
            yield chat(f"m{i}", i * 0.1)

    last = None
    for last in with_context(endless(), chat=True):  # noqa: B007
        pass
    assert last is not None and last.neighbours.before == ["M19998: message m19998", "M19997: message m19997"][::-1]


def test_neighbours_of_a_strong_hit_are_lifted() -> None:
    a, b, c = chat("a", 0), chat("b", 1), chat("c", 2)
    for r, prev, nxt in ((a, None, "b"), (b, "a", "c"), (c, "b", None)):
        r.neighbours = Neighbours(prev=prev, next=nxt)
    ranked = lift_neighbours([Hit(b, 1.0), Hit(chat("z", 9), 0.5), Hit(a, 0.45), Hit(c, 0.1)])
    assert [h.record.id for h in ranked] == ["b", "a", "z", "c"]  # a: 0.45 + 0.3 x 1.0 overtakes z


def test_records_that_are_not_chat_pass_through_untouched() -> None:
    records = [chat("a", 0), chat("b", 1), chat("c", 2)]
    assert list(with_context(iter(records), chat=False)) == records
    assert all(r.extra == {} and r.neighbours is None for r in records)


def test_a_record_indexed_before_its_core_keys_were_fields_is_read_forward() -> None:
    """Payloads stored by earlier versions kept neighbours, session, passage, audio... in `extra`."""
    old = chat("b", 1).model_dump(mode="json") | {"ts": 0.0}
    old["extra"] = {
        "before": ["A: message a"], "after": ["C: message c"], "prev": "a", "next": "c", "session": 3,
        "passage": 2, "audio": "PTT-1.opus", "transcribed": True, "quoted": "> earlier", "line": 12,
    }  # fmt: skip
    record = from_payload(old)
    assert record.neighbours == Neighbours(before=["A: message a"], after=["C: message c"], prev="a", next="c")
    assert (record.session, record.passage, record.audio, record.transcribed) == (3, 2, "PTT-1.opus", True)
    assert record.quoted == "> earlier" and record.extra == {"line": 12}  # the importer's own key stays
    assert context_text(record, 1, 1) == "B: message b\nA: message a\nC: message c"
    ranked = lift_neighbours([Hit(record, 1.0), Hit(chat("z", 9), 0.5), Hit(chat("a", 0), 0.45)])
    assert [h.record.id for h in ranked] == ["b", "a", "z"]


async def test_mails_and_documents_are_stored_without_neighbours(history: HistoryIndex) -> None:
    summary = await ingest(history, "alice", [chat("a", 0), chat("b", 1)], chat=False)
    assert summary.imported == 2
    stored = [r async for r in history.export("alice")]
    assert [(r.extra, r.neighbours) for r in stored] == [({}, None), ({}, None)]


async def test_import_twice_adds_nothing_and_reports_duplicates(tmp_path: Path, history: HistoryIndex) -> None:
    path = write_whatsapp_txt(tmp_path, ANDROID_US)
    first = await ingest(history, "alice", open_importer("whatsapp", path, "alice").items())
    stored = await history.count("alice")
    second = await ingest(history, "alice", open_importer("whatsapp", path, "alice").items())
    assert first.imported == stored > 5
    assert second.imported == 0 and second.duplicates == stored
    assert await history.count("alice") == stored


async def test_interrupted_import_resumes_where_it_stopped(history: HistoryIndex) -> None:
    records = [chat(f"r{i}", i) for i in range(30)]

    def dies_after(n: int) -> Iterator[HistoryRecord]:
        yield from records[:n]
        raise KeyboardInterrupt  # the person pressed Ctrl-C, or the machine went down

    with pytest.raises(KeyboardInterrupt):
        await ingest(history, "alice", dies_after(25), batch_size=10)
    done = await history.count("alice")
    assert 0 < done < 30
    again = await ingest(history, "alice", iter(records), batch_size=10)
    assert again.duplicates == done and again.imported == 30 - done
    assert await history.count("alice") == 30


async def test_problems_are_reported_and_the_rest_imports(history: HistoryIndex) -> None:
    items = [chat("a", 0), Problem("chat.txt:7", "unreadable date '31/31/23'"), chat("b", 1), chat("c", 2, text=" ")]
    summary = await ingest(history, "alice", items)
    assert (summary.imported, summary.problems, summary.skipped) == (2, 1, 1)
    assert summary.errors == ["chat.txt:7: unreadable date '31/31/23'"]


async def test_a_wrong_file_changes_nothing(tmp_path: Path, history: HistoryIndex) -> None:
    await ingest(history, "alice", [chat("keep", 0)])
    bogus = tmp_path / "result.json"
    bogus.write_text('{"not": "a telegram export"}')
    importer = open_importer("telegram", bogus, "alice")
    with pytest.raises(WrongKind):
        importer.check()
    assert [r.id async for r in history.export("alice")] == ["keep"]
