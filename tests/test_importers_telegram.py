"""Telegram Desktop exports: one chat and a whole account; text entities, service messages, broken messages."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.history.importers.base import Problem, WrongKind
from bridge.history.importers.registry import open_importer
from bridge.messages import HistoryRecord
from tests.import_fixtures import ANDROID_US, telegram_account, telegram_chat, write_json, write_whatsapp_txt


def run(path: Path) -> tuple[list[HistoryRecord], list[Problem]]:
    items = list(open_importer("telegram", path, "me").items())
    return [i for i in items if isinstance(i, HistoryRecord)], [i for i in items if isinstance(i, Problem)]


def test_single_chat_export(tmp_path: Path) -> None:
    records, problems = run(write_json(tmp_path / "ChatExport_2024-01-02" / "result.json", telegram_chat()))
    by_id = {r.extra["message_id"]: r for r in records}
    assert sorted(by_id) == [2, 3, 4, 5, 6, 8, 9]  # 1 is a service message, 7 has no date
    assert [r.extra["message_id"] for r in records] == [2, 3, 4, 5, 6, 8, 9]  # the chat's order
    code = by_id[2]
    assert (code.text, code.author, code.conversation, code.channel) == (
        "The cabin door code is 4711",
        "Anna",
        "Anna",
        "telegram",
    )
    # date_unixtime wins over the local "date" (an hour apart in the fixture).
    assert code.time == datetime(2023, 12, 31, 21, 5, tzinfo=UTC)
    assert code.link == "4242/2"
    reply = by_id[3]
    assert reply.text == "Thanks! Directions: https://example.org/cabin and bring boots, see the map"
    assert reply.extra["reply_to"] == 2 and reply.extra["edited"] is True
    assert reply.extra["links"] == ["https://example.org/cabin", "https://example.org/map"]
    assert by_id[4].extra["forwarded_from"] == "Travel Deals"
    assert by_id[5].extra["attachments"] == ["photo_1@31-12-2023_22-09-00.jpg"] and by_id[5].text == "porch view"
    assert by_id[6].extra["attachments"] == ["floor-plan.pdf"] and by_id[6].extra["media_omitted"] is True
    # Only "date": local time, stored as UTC.
    assert by_id[8].time == datetime(2023, 12, 31, 22, 12, tzinfo=UTC) and by_id[8].author == "user99"
    assert by_id[9].extra["sticker"] == "😀" and by_id[9].text == "sent a sticker 😀"
    assert {r.source for r in records} == {"telegram:ChatExport_2024-01-02/result.json"}
    assert [(p.where, "date" in p.why) for p in problems] == [("result.json chat 'Anna' message 7", True)]


def test_account_export_covers_every_chat_and_ids_are_stable(tmp_path: Path) -> None:
    folder = tmp_path / "DataExport_2024-01-02"
    write_json(folder / "result.json", telegram_account())
    records, problems = run(folder)  # the export folder works as well as its result.json
    assert len(problems) == 1
    assert [r.conversation for r in records][-2:] == ["Saved Messages", "Old neighbours"]
    assert records[-1].text == "The bins go out on Tuesdays" and records[-1].extra["chat_type"] == "private_supergroup"
    again, _ = run(folder / "result.json")
    assert [r.id for r in records] == [r.id for r in again]
    assert len({r.id for r in records}) == len(records)
    # The same chat in a single-chat export yields the same ids: importing both adds nothing twice.
    single, _ = run(write_json(tmp_path / "single" / "result.json", telegram_chat()))
    assert {r.id for r in single} <= {r.id for r in records}


def test_a_chat_that_is_not_an_object_is_a_problem(tmp_path: Path) -> None:
    data = telegram_account()
    data["chats"]["list"].insert(0, "garbage")
    data["chats"]["list"][1]["messages"].insert(0, {"id": 50, "type": "message", "date_unixtime": "1", "text": 7})
    records, problems = run(write_json(tmp_path / "result.json", data))
    assert len(records) == 9
    assert [p.where for p in problems] == [
        "result.json",
        "result.json chat 'Anna' message 50",
        "result.json chat 'Anna' message 7",
    ]


def test_other_files_are_refused_before_anything(tmp_path: Path) -> None:
    locomo = write_json(tmp_path / "26.json", {"speaker_a": "A", "speaker_b": "B", "session_1": [], "qa": []})
    chat = write_whatsapp_txt(tmp_path, ANDROID_US)
    broken = tmp_path / "broken.json"
    broken.write_text("not json at all")
    for path in (locomo, chat, broken, tmp_path / "missing.json", tmp_path):
        importer = open_importer("telegram", path, "me")
        with pytest.raises(WrongKind):
            next(iter(importer.items()))


def test_a_truncated_export_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text('{"name": "Anna", "type": "personal_chat", "id": 1, "messages": [{"id": 1, "type": "mess')
    records, problems = run(path)
    assert records == [] and len(problems) == 1 and "JSON" in problems[0].why


def test_messages_without_words_say_what_was_sent(tmp_path: Path) -> None:
    """Voice notes, contacts, places and stickers are messages of the chat: kept, saying what was sent; text
    written as an array of entities (links, bold, mentions) reads as its plain text."""

    def message(n: int, **fields: object) -> dict[str, object]:
        return {"id": n, "type": "message", "date": f"2023-12-31T21:0{n}:00", "date_unixtime": str(1704056400 + n * 60),
                "from": "Anna", "from_id": "user1", "text": "", **fields}  # fmt: skip

    chat = {"name": "Anna", "type": "personal_chat", "id": 5, "messages": [
        message(1, file="voice_messages/audio_1@31-12-2023_21-01-00.ogg", media_type="voice_message",
                mime_type="audio/ogg", duration_seconds=4),
        message(2, contact_information={"first_name": "Ben", "last_name": "Berg", "phone_number": "+1 555 0100"}),
        message(3, location_information={"latitude": 59.91, "longitude": 10.75}),
        message(4, photo="(File not included. Change data exporting settings to download.)", width=800, height=600),
        message(5, text=["The ferry: ", {"type": "link", "text": "https://example.org/ferry"}, " ",
                         {"type": "bold", "text": "bring boots"}]),
    ]}  # fmt: skip
    records, problems = run(write_json(tmp_path / "result.json", chat))
    assert problems == []
    assert [r.text for r in records] == [
        "sent a voice message (audio_1@31-12-2023_21-01-00.ogg)",
        "sent a contact card (Ben Berg)",
        "shared a location (59.91, 10.75)",
        "sent a photo (not included in the export)",
        "The ferry: https://example.org/ferry bring boots",
    ]
    assert all(r.extra.get("media") for r in records[:1]) and records[3].extra["media_omitted"] is True


def test_service_messages_of_an_export_in_another_language_are_not_stored(tmp_path: Path) -> None:
    """Telegram Desktop types service messages ("type": "service", with an English `action` whatever the app's
    language); only what people wrote is stored, here from an Italian group and a German private chat."""

    ids = {"Marco Rossi": "user11", "Giulia Bianchi": "user14", "Anna Schmidt": "user12", "Ich": "user3"}

    def at(n: int) -> dict[str, str]:
        return {"date": f"2024-03-0{n}T10:00:00", "date_unixtime": str(1709287200 + n * 86400)}

    def said(n: int, who: str, text: str) -> dict[str, object]:
        return {"id": n, "type": "message", **at(n % 10), "from": who, "from_id": ids[who], "text": text,
                "text_entities": [{"type": "plain", "text": text}]}  # fmt: skip

    def service(n: int, action: str, **fields: object) -> dict[str, object]:
        return {"id": n, "type": "service", **at(n % 10), "actor": "Giulia Bianchi", "actor_id": "user14",
                "action": action, "text": "", "text_entities": [], **fields}  # fmt: skip

    famiglia = {"name": "Famiglia Rossi", "type": "private_group", "id": 31, "messages": [
        service(1, "create_group", title="Famiglia Rossi", members=["Giulia Bianchi", "Marco Rossi"]),
        said(2, "Marco Rossi", "La chiave della cantina è nel cassetto della cucina"),
        service(3, "pin_message", message_id=2),
        service(4, "invite_members", members=["Nonna Rossi"]),
        service(5, "edit_group_title", title="Famiglia Rossi 🏡"),
        # A service message whose text field is filled (some exporter versions): still not something said.
        service(6, "invite_to_group_call", members=["Marco Rossi"], text="Giulia ha avviato una videochiamata"),
        said(7, "Giulia Bianchi", "Sabato pranzo dalla nonna alle 13"),
    ]}  # fmt: skip
    anna = {"name": "Anna Schmidt", "type": "personal_chat", "id": 32, "messages": [
        service(11, "phone_call", actor="Anna Schmidt", actor_id="user12", duration_seconds=125,
                discard_reason="hangup"),
        service(12, "phone_call", actor="Anna Schmidt", actor_id="user12", discard_reason="missed"),
        said(13, "Anna Schmidt", "Der Ersatzschlüssel liegt unter dem blauen Blumentopf."),
        service(14, "pin_message", actor="Anna Schmidt", actor_id="user12", message_id=13),
        said(15, "Ich", "Danke! Bis Samstag."),
    ]}  # fmt: skip
    export = {
        "about": "Ecco i dati che hai richiesto.",
        "personal_information": {"user_id": 3, "first_name": "Ich", "phone_number": "+49 30 0000000"},
        "chats": {"about": "", "list": [famiglia, anna]},
    }

    records, problems = run(write_json(tmp_path / "DataExport_2024-03-10" / "result.json", export))

    assert problems == []
    assert [(r.conversation, r.extra["message_id"], r.author, r.text) for r in records] == [
        ("Famiglia Rossi", 2, "Marco Rossi", "La chiave della cantina è nel cassetto della cucina"),
        ("Famiglia Rossi", 7, "Giulia Bianchi", "Sabato pranzo dalla nonna alle 13"),
        ("Anna Schmidt", 13, "Anna Schmidt", "Der Ersatzschlüssel liegt unter dem blauen Blumentopf."),
        ("Anna Schmidt", 15, "Ich", "Danke! Bis Samstag."),
    ]
    assert all("videochiamata" not in r.text for r in records)
