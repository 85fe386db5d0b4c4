"""LoCoMo conversations: one record per turn, findable by the dia_ids the questions cite."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks.locomo_import import LocomoImporter, load_questions, normalized_evidence
from bridge.history.importers.base import Problem, WrongKind
from bridge.messages import HistoryRecord
from tests.import_fixtures import telegram_chat, write_json

LOCOMO_26 = Path("/work/shared/datasets/locomo/26.json")


def run(path: Path) -> tuple[list[HistoryRecord], list[Problem]]:
    items = list(LocomoImporter(path, "me").items())
    return [i for i in items if isinstance(i, HistoryRecord)], [i for i in items if isinstance(i, Problem)]


def test_every_evidence_turn_of_conversation_26_is_a_record() -> None:
    records, problems = run(LOCOMO_26)
    assert problems == []
    links = [r.link for r in records]
    assert len(links) == len(set(links)) == len({r.id for r in records})
    questions = load_questions(LOCOMO_26)
    evidence = {dia for q in questions for dia in q["evidence"]}
    assert evidence and evidence <= set(links)
    # The file has "D8:6; D9:17" in one evidence string: both turns count.
    assert any(q["evidence"][-2:] == ["D8:6", "D9:17"] for q in questions)
    assert {q["category"] for q in questions} == {1, 2, 3, 4, 5}
    assert all(set(q) >= {"question", "answer", "evidence", "category"} for q in questions)


def test_turn_records() -> None:
    records, _ = run(LOCOMO_26)
    first = records[0]
    assert (first.link, first.author, first.conversation) == ("D1:1", "Caroline", "Caroline & Melanie")
    assert first.time == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)  # "1:56 pm on 8 May, 2023"
    assert first.extra == {"dia_id": "D1:1"} and first.session == 1
    assert {r.source for r in records} == {"locomo:26.json"}
    session_1 = [r for r in records if r.session == 1]
    assert [r.time for r in session_1] == sorted({r.time for r in session_1})  # strictly increasing
    assert [r.session for r in records] == sorted(r.session for r in records)  # 1, 2, ..., 19
    photo = next(r for r in records if "blip_caption" in r.extra)
    assert photo.text.endswith(f" [shares a photo: {photo.extra['blip_caption']}]")
    again, _ = run(LOCOMO_26)
    assert [r.id for r in records] == [r.id for r in again]


def test_small_conversation_with_a_broken_session_and_turn(tmp_path: Path) -> None:
    data = {
        "speaker_a": "Jon",
        "speaker_b": "Gina",
        "session_10_date_time": "9:00 am on 2 February, 2023",
        "session_10": [{"speaker": "Gina", "dia_id": "D10:1", "text": "Later session"}],
        "session_2_date_time": "4:04 pm on 20 January, 2023",
        "session_2": [
            {"speaker": "Jon", "dia_id": "D2:1", "text": "Lost my job today."},
            {"speaker": "Gina", "text": "no dia_id"},
            {"speaker": "Gina", "dia_id": "D2:3", "text": "Oh no", "img_url": ["x"], "blip_caption": "a sad cat"},
        ],
        "session_3_date_time": "sometime",
        "session_3": [{"speaker": "Jon", "dia_id": "D3:1", "text": "undated"}],
        "qa": [{"question": "Q?", "answer": "A", "evidence": ["D:2:1", "D"], "category": 4}],
    }
    records, problems = run(write_json(tmp_path / "small.json", data))
    assert [r.link for r in records] == ["D2:1", "D2:3", "D10:1"]  # sessions in number order, not text order
    assert records[1].text == "Oh no [shares a photo: a sad cat]"
    assert records[1].time == datetime(2023, 1, 20, 16, 4, 2, tzinfo=UTC)
    assert [p.where for p in problems] == ["small.json session 2 turn 2", "small.json session 3"]
    assert load_questions(tmp_path / "small.json")[0]["evidence"] == ["D2:1"]
    assert normalized_evidence(["D8:6; D9:17", "D:11:26", "D"]) == ["D8:6", "D9:17", "D11:26"]


def test_other_files_are_refused_before_anything(tmp_path: Path) -> None:
    telegram = write_json(tmp_path / "result.json", telegram_chat())
    text = tmp_path / "notes.txt"
    text.write_text("speaker_a")
    for path in (telegram, text, tmp_path):
        with pytest.raises(WrongKind):
            next(iter(LocomoImporter(path, "me").items()))
