"""WhatsApp chat exports: Android and iOS layouts, clocks, date orders, media, system lines, broken lines."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.history.importers.base import Problem, WrongKind
from bridge.history.importers.registry import open_importer
from bridge.history.index import HistoryIndex
from bridge.history.ingest import ingest
from bridge.messages import HistoryRecord
from tests.import_fixtures import ANDROID_US, IOS_DE, write_json, write_whatsapp_txt, write_whatsapp_zip


def run(path: Path, **options: object) -> tuple[list[HistoryRecord], list[Problem]]:
    items = list(open_importer("whatsapp", path, "me", **options).items())
    return [i for i in items if isinstance(i, HistoryRecord)], [i for i in items if isinstance(i, Problem)]


def test_android_month_first_twelve_hour_export(tmp_path: Path) -> None:
    records, problems = run(write_whatsapp_txt(tmp_path, ANDROID_US))
    assert problems == []
    first = records[0]
    # A multi-line message is one record, blank line included; the system lines before it are gone.
    assert first.text == "The cabin wifi password is\npinecone-42\n\n(all lowercase: the router is old)"
    assert (first.author, first.conversation, first.channel) == ("Anna", "Anna", "whatsapp")
    assert first.time == datetime(2023, 12, 31, 21, 5, tzinfo=UTC)  # 9:05\u202fPM, month first
    assert first.link == "WhatsApp Chat with Anna.txt:5"
    assert {r.source for r in records} == {"whatsapp:WhatsApp Chat with Anna.txt"}
    texts = [r.text for r in records]
    assert not any("encrypted" in t or "joined" in t or "added" in t or "Trip" in t for t in texts)
    assert not any("deleted" in t for t in texts)
    by_line = {r.extra["line"]: r for r in records}
    # A message that is only media is a message of the chat: kept, saying what was sent.
    assert by_line[9].text == "sent a media file (not included in the export)"
    assert by_line[9].extra["media_omitted"] is True and by_line[9].extra["media"] is True
    assert by_line[10].text == "View from the porch"
    assert by_line[10].extra["attachments"] == ["IMG-20231231-WA0001.jpg"]
    assert by_line[15].author == "+1 (555) 010-9999"  # bidi marks around the number stripped
    assert by_line[16].text == "Happy new year: see you at 1:00 PM"  # only the first ": " splits the author off
    assert by_line[16].time == datetime(2023, 12, 31, 23, 59, tzinfo=UTC)
    assert by_line[17].time.hour == 12  # 12:30 PM is noon
    assert by_line[18].time == datetime(2024, 1, 13, 0, 15, tzinfo=UTC)  # 12:15 AM is after midnight
    assert by_line[18].text == "late night" and by_line[18].extra["edited"] is True


def test_identical_messages_get_their_own_ids_and_ids_are_stable(tmp_path: Path) -> None:
    path = write_whatsapp_txt(tmp_path, ANDROID_US)
    first, _ = run(path)
    again, _ = run(path)
    assert [r.id for r in first] == [r.id for r in again]
    assert len({r.id for r in first}) == len(first)
    oks = [r for r in first if r.text == "ok"]
    assert len(oks) == 2 and oks[0].id != oks[1].id
    # A later, longer export of the same chat gives the earlier messages the same ids: re-import adds only news.
    longer = write_whatsapp_txt(tmp_path / "later", [*ANDROID_US, "01/14/24, 8:00 AM - Ben: morning"])
    later, _ = run(longer)
    assert {r.id for r in first} < {r.id for r in later}


def test_ios_zip_day_first_with_seconds(tmp_path: Path) -> None:
    records, problems = run(write_whatsapp_zip(tmp_path, IOS_DE))
    assert problems == []
    assert {r.conversation for r in records} == {"Familie"}
    assert {r.source for r in records} == {"whatsapp:WhatsApp Chat - Familie.zip"}
    assert [r.author for r in records] == ["Anna", "Ben", "Ben", "Ben", "Anna"]
    meeting = records[0]
    assert meeting.text == "Wir treffen uns um 10 Uhr\nam Bahnhof, Gleis 3."
    assert meeting.time == datetime(2023, 12, 31, 21, 6, 0, tzinfo=UTC)
    assert records[1].extra["attachments"] == ["00000012-PHOTO-2023-12-31-21-07-00.jpg"]
    assert records[1].text == "sent a photo (00000012-PHOTO-2023-12-31-21-07-00.jpg)"
    assert records[2].extra["media_omitted"] is True and records[2].text == "sent a photo (not included in the export)"
    assert records[3].extra["attachments"] == ["Fahrplan.pdf"] and records[3].text == "sent a document (Fahrplan.pdf)"
    assert records[4].text == "Frohes neues Jahr!" and records[4].time == datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert all("\u200e" not in r.text and "\u200e" not in r.author for r in records)
    assert records[0].link == "WhatsApp Chat - Familie.zip/_chat.txt:3"


def test_android_zip_with_the_chat_named_like_the_zip(tmp_path: Path) -> None:
    path = tmp_path / "WhatsApp Chat with Ben.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("IMG-20231231-WA0001.jpg", b"\xff\xd8")
        archive.writestr("WhatsApp Chat with Ben.txt", "31/12/2023, 21:05 - Ben: Ferry at 7:40\n")
    records, _ = run(path)
    assert [(r.text, r.conversation, r.time.month) for r in records] == [("Ferry at 7:40", "Ben", 12)]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("31/12/2023, 21:05 - Anna: x", datetime(2023, 12, 31, 21, 5)),
        ("31.12.23, 21.05 - Anna: x", datetime(2023, 12, 31, 21, 5)),
        ("2023-12-31, 21:05 - Anna: x", datetime(2023, 12, 31, 21, 5)),
        ("[12/31/23, 9:05:09 PM] Anna: x", datetime(2023, 12, 31, 21, 5, 9)),
        ("12/31/23, 9:05 p.m. - Anna: x", datetime(2023, 12, 31, 21, 5)),
        ("12/31/23, 9:05 a.m. - Anna: x", datetime(2023, 12, 31, 9, 5)),
        ("12/31/23, 12:05\u202fa.m. - Anna: x", datetime(2023, 12, 31, 0, 5)),
    ],
)
def test_date_and_clock_layouts(tmp_path: Path, line: str, expected: datetime) -> None:
    records, problems = run(write_whatsapp_txt(tmp_path, [line]))
    assert problems == []
    assert [r.time for r in records] == [expected.replace(tzinfo=UTC)]


def test_ambiguous_dates_follow_the_option_or_are_reported(tmp_path: Path) -> None:
    path = write_whatsapp_txt(tmp_path, ["05/06/23, 10:00 - Anna: hi", "05/06/23, 10:01 - Ben: hello"])
    may, problems = run(path, date_order="mdy")
    assert problems == [] and may[0].time.month == 5
    june, _ = run(path, date_order="dmy")
    assert june[0].time.month == 6
    guessed, problems = run(path)
    assert len(problems) == 1 and "day and month" in problems[0].why
    assert len(guessed) == 2
    # Evidence in the file wins over the option: 13 cannot be a month.
    evident = write_whatsapp_txt(tmp_path / "e", ["05/06/23, 10:00 - Anna: hi", "13/06/23, 10:01 - Ben: x"])
    records, _ = run(evident, date_order="mdy")
    assert records[0].time.month == 6


def test_malformed_lines_are_problems_and_the_rest_imports(tmp_path: Path) -> None:
    lines = [
        "stray text before any message",
        "31/12/2023, 21:05 - Anna: first",
        "31/13/2023, 21:06 - Anna: a month that does not exist",
        "and its second line",
        "31/12/2023, 25:07 - Ben: an hour that does not exist",
        "31/12/2023, 21:08 - Ben: last",
    ]
    records, problems = run(write_whatsapp_txt(tmp_path, lines))
    assert [r.text for r in records] == ["first", "last"]
    assert [p.where for p in problems] == [
        "WhatsApp Chat with Anna.txt:1",
        "WhatsApp Chat with Anna.txt:3",
        "WhatsApp Chat with Anna.txt:5",
    ]


def test_not_a_whatsapp_export_is_refused_before_anything(tmp_path: Path) -> None:
    json_file = write_json(tmp_path / "result.json", {"name": "Anna", "messages": []})
    note = tmp_path / "note.txt"
    note.write_text("Shopping list\n\nmilk, eggs\n")
    empty_zip = tmp_path / "photos.zip"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("IMG-1.jpg", b"\xff\xd8")
    for path in (json_file, note, empty_zip, tmp_path):
        importer = open_importer("whatsapp", path, "me")
        with pytest.raises(WrongKind):
            importer.check()
        with pytest.raises(WrongKind):
            next(iter(importer.items()))


async def test_a_photo_sent_without_words_is_found_by_what_was_said_around_it(
    tmp_path: Path, history: HistoryIndex
) -> None:
    lines = [
        "12/31/23, 9:05\u202fPM - Ben: Look, the new boat is in the water!",
        "12/31/23, 9:06\u202fPM - Ben: IMG-20231231-WA0007.jpg (file attached)",
        "12/31/23, 9:07\u202fPM - Anna: 😍⛵👍",  # emoji only: a message too
        "12/31/23, 9:30\u202fPM - Anna: Dinner is at eight, bring the salad",
        "01/02/24, 8:00\u202fAM - Anna: The plumber comes on Thursday",
    ]
    importer = open_importer("whatsapp", write_whatsapp_txt(tmp_path, lines), "alice")
    summary = await ingest(history, "alice", importer.items())
    assert (summary.imported, summary.skipped) == (5, 0)
    hits = await history.search("alice", "When did Ben send the photo of the boat?", limit=2)
    photo = [h.record for h in hits if h.record.extra.get("media")]
    assert [r.text for r in photo] == ["sent a photo (IMG-20231231-WA0007.jpg)"]
    assert photo[0].author == "Ben" and photo[0].time == datetime(2023, 12, 31, 21, 6, tzinfo=UTC)
    [emoji] = [r async for r in history.export("alice") if r.author == "Anna" and r.time.minute == 7]
    assert emoji.text == "😍⛵👍"


@pytest.mark.parametrize(
    ("layout", "lines", "first_time"),
    [
        # iOS before 2017: no brackets, a colon after the time (12- and 24-hour clocks).
        ("old iOS, 12-hour", ["12/31/15, 9:05:23 PM: Anna: the key is under the mat",
                              "1/1/16, 10:00:00 AM: Ben: Happy new year"], datetime(2015, 12, 31, 21, 5, 23)),
        ("old iOS, 24-hour", ["31/12/2015 21:05:23: Anna: the key is under the mat",
                              "01/01/2016 10:00:00: Ben: Happy new year"], datetime(2015, 12, 31, 21, 5, 23)),
        # ISO dates (phones set to an ISO region format), with and without the comma.
        ("ISO, Android", ["2023-12-31, 21:05 - Anna: the key is under the mat",
                          "2024-01-01 10:00 - Ben: Happy new year"], datetime(2023, 12, 31, 21, 5)),
        ("ISO, iOS", ["[2023-12-31, 21:05:09] Anna: the key is under the mat",
                      "[2024-01-01, 10:00:00] Ben: Happy new year"], datetime(2023, 12, 31, 21, 5, 9)),
        # Chinese and Japanese 12-hour clocks: the half of the day before the time.
        ("Chinese", ["2023/12/31 下午9:05 - Anna: the key is under the mat",
                     "2024/1/1 上午10:00 - Ben: Happy new year"], datetime(2023, 12, 31, 21, 5)),
        ("Japanese", ["2023/12/31 午後9:05 - Anna: the key is under the mat",
                      "2024/01/01 午前10:00 - Ben: Happy new year"], datetime(2023, 12, 31, 21, 5)),
        # Localized 12-hour marks and German day-first dates.
        ("Spanish", ["31/12/23, 9:05 p. m. - Anna: the key is under the mat",
                     "1/1/24, 10:00 a. m. - Ben: Happy new year"], datetime(2023, 12, 31, 21, 5)),
        ("German", ["31.12.23, 21:05 - Anna: the key is under the mat",
                    "01.01.24, 10:00 - Ben: Happy new year"], datetime(2023, 12, 31, 21, 5)),
    ],
)  # fmt: skip
def test_older_and_localized_layouts(tmp_path: Path, layout: str, lines: list[str], first_time: datetime) -> None:
    records, problems = run(write_whatsapp_txt(tmp_path, lines))
    assert problems == [], layout
    assert [(r.author, r.text) for r in records] == [("Anna", "the key is under the mat"), ("Ben", "Happy new year")]
    assert records[0].time == first_time.replace(tzinfo=UTC)
    assert records[1].time.hour == 10 and records[1].time.date().isoformat().endswith("01-01")
