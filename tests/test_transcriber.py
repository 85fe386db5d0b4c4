"""Voice notes in a WhatsApp zip become what was said: `confide import` (a real subprocess) transcribes each new
one through an OpenAI-compatible /v1/audio/transcriptions (the tests' server on loopback, Whisper's wire
format), once; a question about what was said is answered from the note, which it cites."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from bridge.models.transcriber import ogg_seconds
from tests.cli_helpers import cli_env, run_cli
from tests.fakes.openai_server import FakeOpenAI, retrieved_history
from tests.import_fixtures import ogg_opus

SAID = "The spare key for the boat is in the red toolbox"
CHAT = [
    "12/31/23, 9:05\u202fPM - Ben: PTT-20231231-WA0004.opus (file attached)",
    "12/31/23, 9:06\u202fPM - Anna: ok, thanks!",
    "12/31/23, 9:07\u202fPM - Ben: PTT-20231231-WA0005.opus (file attached)",
    "12/31/23, 9:08\u202fPM - Ben: IMG-20231231-WA0006.jpg (file attached)",
]


def export(folder: Path) -> Path:
    path = folder / "WhatsApp Chat with Ben.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("WhatsApp Chat with Ben.txt", "\r\n".join(CHAT) + "\r\n")
        archive.writestr("PTT-20231231-WA0004.opus", b"SPEECH:" + SAID.encode())
        archive.writestr("PTT-20231231-WA0005.opus", b"SPEECH:" + b"long " * 100)  # over the bound below
        archive.writestr("IMG-20231231-WA0006.jpg", b"\xff\xd8\xff not a voice note")
    return path


async def test_voice_notes_are_transcribed_once_and_answer_questions(tmp_path: Path, fake_llm: FakeOpenAI) -> None:
    models = {"main": {"base_url": fake_llm.base_url, "model": fake_llm.model}}
    env = cli_env(tmp_path, models=json.dumps(models), transcriber__backend="openai",
                  transcriber__base_url=fake_llm.base_url, transcriber__model=fake_llm.model,
                  transcriber__max_audio_bytes="200")  # fmt: skip
    zipped = export(tmp_path)

    first = await run_cli(["import", "whatsapp", str(zipped), "--person", "me"], env)
    assert first.code == 0, first.stderr
    assert "Imported 4, already there 0, skipped 0, problems 1." in first.stderr, first.stderr
    assert "PTT-20231231-WA0005.opus: not transcribed" in first.stderr  # over 200 bytes: kept, untranscribed
    assert [(t["name"], t["model"]) for t in fake_llm.transcriptions] == [("PTT-20231231-WA0004.opus", "test-model")]

    again = await run_cli(["import", "whatsapp", str(zipped), "--person", "me"], env)
    assert "Imported 0, already there 4" in again.stderr, again.stderr
    assert len(fake_llm.transcriptions) == 1, "a voice note already stored was transcribed again"

    exported = await run_cli(["export", "--person", "me"], env)
    records = {r["text"]: r for r in map(json.loads, exported.stdout.splitlines())}
    note = records[f"sent a voice message (PTT-20231231-WA0004.opus), transcribed: {SAID}"]
    assert note["author"] == "Ben" and note["transcribed"] is True
    assert "sent a voice message (PTT-20231231-WA0005.opus)" in records  # the one over the bound, as it was
    assert "sent a photo (IMG-20231231-WA0006.jpg)" in records

    asked = await run_cli(["chat"], env, stdin="Where is the spare key for the boat?\n/sources\n")
    assert asked.code == 0, asked.stderr
    assert SAID in retrieved_history(fake_llm.requests[-1]).split("\n\n")[0]  # the first excerpt: the note
    assert "You asked: Where is the spare key for the boat?" in asked.stdout
    assert SAID in asked.stdout.split("My last answer was based on:")[1].split("[2]")[0]  # /sources: [1] is it


async def test_telegram_voice_messages_are_transcribed_and_nothing_outside_the_export_is_read(
    tmp_path: Path, fake_llm: FakeOpenAI
) -> None:
    models = {"main": {"base_url": fake_llm.base_url, "model": fake_llm.model}}
    env = cli_env(tmp_path, models=json.dumps(models), transcriber__backend="openai",
                  transcriber__base_url=fake_llm.base_url, transcriber__model=fake_llm.model)  # fmt: skip
    (tmp_path / "secret.ogg").write_bytes(b"SPEECH:a file outside the export")
    folder = tmp_path / "ChatExport_2024-01-02"
    (folder / "voice_messages").mkdir(parents=True)
    (folder / "voice_messages" / "audio_1@31-12-2023_21-05-00.ogg").write_bytes(b"SPEECH:" + SAID.encode())

    def voice(n: int, file: str) -> dict[str, object]:
        return {"id": n, "type": "message", "date": "2023-12-31T21:05:00", "date_unixtime": str(1704056700 + n),
                "from": "Ben", "from_id": "user2", "text": "", "file": file, "media_type": "voice_message",
                "mime_type": "audio/ogg", "duration_seconds": 3}  # fmt: skip

    chat = {
        "name": "Ben",
        "type": "personal_chat",
        "id": 7,
        "messages": [voice(1, "voice_messages/audio_1@31-12-2023_21-05-00.ogg"), voice(2, "../secret.ogg")],
    }
    (folder / "result.json").write_text(json.dumps(chat))  # fmt: skip

    imported = await run_cli(["import", "telegram", str(folder), "--person", "me"], env)
    assert imported.code == 0 and "Imported 2" in imported.stderr, imported.stderr
    assert [t["name"] for t in fake_llm.transcriptions] == ["voice_messages/audio_1@31-12-2023_21-05-00.ogg"]
    exported = await run_cli(["export", "--person", "me"], env)
    texts = sorted(json.loads(line)["text"] for line in exported.stdout.splitlines())
    assert texts == [f"sent a voice message (audio_1@31-12-2023_21-05-00.ogg), transcribed: {SAID}",
                     "sent a voice message (secret.ogg)"]  # fmt: skip


async def test_the_import_shows_minutes_of_audio_done_and_left(tmp_path: Path, fake_llm: FakeOpenAI) -> None:
    """Opus voice notes say how long they play (their last page's granule position): the import counts minutes."""
    models = {"main": {"base_url": fake_llm.base_url, "model": fake_llm.model}}
    env = cli_env(tmp_path, models=json.dumps(models), transcriber__backend="openai",
                  transcriber__base_url=fake_llm.base_url, transcriber__model=fake_llm.model)  # fmt: skip
    path = tmp_path / "WhatsApp Chat with Ben.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("WhatsApp Chat with Ben.txt", "\r\n".join(CHAT[:3]) + "\r\n")
        archive.writestr("PTT-20231231-WA0004.opus", ogg_opus(90, b"SPEECH:" + SAID.encode()))
        archive.writestr("PTT-20231231-WA0005.opus", ogg_opus(30, b"SPEECH:Dinner is at eight"))
    imported = await run_cli(["import", "whatsapp", str(path), "--person", "me"], env)
    assert imported.code == 0, imported.stderr
    assert "Transcribing voice notes" in imported.stderr, imported.stderr
    assert "2.0 min of audio done, ~0.0 min left" in imported.stderr, imported.stderr
    assert len(fake_llm.transcriptions) == 2


def test_ogg_seconds_reads_the_length_of_opus_and_nothing_else() -> None:
    assert ogg_seconds(ogg_opus(3.5, b"SPEECH:hi")) == 3.5
    assert ogg_seconds(b"SPEECH:" + b"x" * 100) is None
    damaged = bytearray(ogg_opus(3.5, b"SPEECH:hi"))
    damaged[28:36] = b"NotOpus!"  # the first packet is no codec header Confide knows
    assert ogg_seconds(bytes(damaged)) is None
