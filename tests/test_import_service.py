"""The one import service (bridge/history/imports.py): `confide import` and a file sent in a chat read an export
once and
check it once, with the bounds of the one `Settings`; its progress callback and summary say what was imported."""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from bridge import cli
from bridge.commands.handlers import CommandCall, Commands
from bridge.config import ImportSettings, Settings
from bridge.dispatch.router import Command
from bridge.history.importers.base import Problem
from bridge.history.importers.registry import find_source
from bridge.history.importers.whatsapp import WhatsAppImporter
from bridge.history.imports import ImportJob, ImportProgress, import_into, open_checked
from bridge.history.index import HistoryIndex
from bridge.intake.hearing import Hearing
from bridge.messages import Attachment, HistoryRecord, IncomingMessage
from bridge.state.chats import ChatState
from tests.cli_helpers import cli_env
from tests.import_fixtures import ogg_opus, write_whatsapp_txt

LONG = "x" * 1500  # over the 1,000 characters the settings below allow a message
CHAT = [
    "13/01/2023, 08:01 - Anna: The boat key is in the red toolbox",
    "13/01/2023, 08:02 - Ben: And the cabin key?",
    "31/31/2023, 08:03 - Ben: a date that is none",
    f"13/01/2023, 08:04 - Anna: {LONG}",
]


def cut_at_the_bound(texts: list[str]) -> bool:
    """The long message is stored as the line's first 1,000 characters (its header, then its text)."""
    longest = max(texts, key=len)
    return set(longest) == {"x"} and len(f"13/01/2023, 08:04 - Anna: {longest}") == 1000


class MemoryHistory:
    """A history in memory: what the service needs of one (`bridge.history.ingest.Histories`), local or remote alike."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], HistoryRecord] = {}

    async def existing(self, person: str, record_ids: Sequence[str]) -> set[str]:
        return {i for i in record_ids if (person, i) in self.records}

    async def add(self, person: str, records: Sequence[HistoryRecord]) -> int:
        fresh = [r for r in records if (person, r.id) not in self.records]
        self.records.update({(person, r.id): r for r in fresh})
        return len(fresh)

    def texts(self, person: str) -> list[str]:
        return [r.text for (owner, _), r in self.records.items() if owner == person]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often WhatsApp exports are checked (`check()`) and parsed (`items()`), whoever asks."""
    counted = {"check": 0, "items": 0}
    check, items = WhatsAppImporter.check, WhatsAppImporter.items

    def counting_check(self: WhatsAppImporter) -> None:
        counted["check"] += 1
        check(self)

    def counting_items(self: WhatsAppImporter) -> Iterator[HistoryRecord | Problem]:
        counted["items"] += 1
        return items(self)

    monkeypatch.setattr(WhatsAppImporter, "check", counting_check)
    monkeypatch.setattr(WhatsAppImporter, "items", counting_items)
    return counted


def test_confide_import_reads_and_checks_an_export_once_within_the_settings_bounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: dict[str, int]
) -> None:
    export = write_whatsapp_txt(tmp_path, CHAT)
    memory = MemoryHistory()

    @asynccontextmanager
    async def history_access(settings: Settings) -> AsyncIterator[MemoryHistory]:
        yield memory  # the index or a running Confide's: the service takes either

    monkeypatch.setattr(cli, "history_access", history_access)
    # Read by the one Settings, which hands it to the importer: importers read no environment of their own.
    env = cli_env(tmp_path, models='{"main": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}',
                  imports__max_message_chars="1000")  # fmt: skip
    result = CliRunner().invoke(cli.app, ["import", "whatsapp", str(export), "--person", "me"], env=env)

    assert result.exit_code == 0, result.output
    assert calls == {"check": 1, "items": 1}, "the export was checked or parsed more than once"
    said = " ".join(result.stderr.split())  # as wide as the terminal: lines may wrap anywhere
    assert "Imported 3, already there 0, skipped 0, problems 2." in said, result.stderr
    assert "cut at 1,000 (CONFIDE_IMPORTS__MAX_MESSAGE_CHARS)" in said, result.stderr
    assert "Importing whatsapp WhatsApp Chat with Anna.txt" in said
    assert sorted(memory.texts("me"))[0] == "And the cabin key?"
    assert cut_at_the_bound(memory.texts("me"))


def test_an_importer_given_no_bounds_reads_the_defaults_not_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFIDE_IMPORTS__MAX_MESSAGE_CHARS", "1000")
    importer = WhatsAppImporter(write_whatsapp_txt(tmp_path, CHAT), "me")
    assert importer.limits.max_message_chars == ImportSettings.model_construct().max_message_chars > 1000


async def test_a_chat_upload_is_detected_checked_and_read_once(
    tmp_path: Path, history: HistoryIndex, calls: dict[str, int]
) -> None:
    export = write_whatsapp_txt(tmp_path, CHAT)
    commands = Commands(history, cast(Any, None), "main", find_source, imports=ImportSettings(max_message_chars=1000))
    message = IncomingMessage(
        channel="console", chat_id="me", sender="alice", platform_message_id="1",
        attachments=[Attachment(name=export.name, mime_type="text/plain", path=str(export))],
    )  # fmt: skip

    async def nothing(_: Any) -> Any:
        return []

    call = CommandCall(Command("import", (), "alice"), message, ChatState("console:me"), "Alice", 0, nothing, nothing)
    result = await commands.run(call)

    assert result.text.startswith("Imported 3, already there 0, skipped 0, problems 2."), result.text
    assert calls == {"check": 1, "items": 1}, "the upload was checked or parsed more than once"
    stored = [r.text async for r in history.export("alice")]
    assert len(stored) == 3 and cut_at_the_bound(stored)  # the bounds given, not the defaults


class FakeTranscriber:
    def __init__(self) -> None:
        self.heard: list[str] = []

    async def transcribe(self, name: str, audio: bytes) -> str:
        self.heard.append(name)
        return audio.split(b"SPEECH:", 1)[1].decode()

    async def close(self) -> None:
        pass


async def test_progress_and_summary_say_what_was_imported_and_heard(tmp_path: Path) -> None:
    path = tmp_path / "WhatsApp Chat with Ben.zip"
    notes = {"PTT-1.opus": ogg_opus(60, b"SPEECH:The key is under the mat"), "PTT-2.opus": ogg_opus(30, b"SPEECH:Hi")}
    with zipfile.ZipFile(path, "w") as archive:
        lines = [f"12/31/23, 9:0{n}\u202fPM - Ben: {name} (file attached)" for n, name in enumerate(notes)]
        archive.writestr("WhatsApp Chat with Ben.txt", "\r\n".join([*lines, "12/31/23, 9:09\u202fPM - Anna: ok"]))
        for name, data in notes.items():
            archive.writestr(name, data)
    transcriber, memory = FakeTranscriber(), MemoryHistory()
    hearing = Hearing(transcriber, max_bytes=1 << 20)

    async def imported() -> tuple[Any, list[ImportProgress]]:
        seen: list[ImportProgress] = []
        importer = open_checked("whatsapp", path, "me", ImportSettings())
        summary = await import_into(memory, ImportJob("me", "a chat", importer), hearing, seen.append)
        return summary, seen

    summary, seen = await imported()
    audio = sum(len(data) for data in notes.values())
    assert (summary.imported, summary.duplicates, summary.problems) == (3, 0, 0)
    assert seen[0] == ImportProgress(read=0, total=None, audio_bytes=audio)  # bars set up before anything is read
    assert (seen[-1].read, seen[-1].heard_bytes, seen[-1].timed_bytes) == (3, audio, audio)
    assert seen[-1].heard_seconds == pytest.approx(90, abs=0.1)
    assert "transcribed: The key is under the mat" in " ".join(memory.texts("me"))

    again, seen = await imported()
    assert (again.imported, again.duplicates) == (0, 3)
    assert seen[-1].read == 3 and seen[-1].heard_bytes == 0, "a stored voice note was transcribed again"
    assert transcriber.heard == list(notes)


class Fetched:
    """Records a platform fetched (as a Matrix room's are): held, so the progress has a total."""

    chat = True

    def __init__(self, records: list[HistoryRecord]) -> None:
        self.records = records

    def items(self) -> list[HistoryRecord]:
        return self.records


def record(n: int) -> HistoryRecord:
    when = datetime(2024, 5, 1, 12, n, tzinfo=UTC)
    return HistoryRecord(id=f"m:{n}", person="room", channel="matrix", conversation="Picnic", author="Bea",
                         time=when, text=f"message {n} about the picnic", source="matrix:!r")  # fmt: skip


async def test_fetched_records_have_a_total_and_their_twins_stay_out() -> None:
    memory = MemoryHistory()
    await memory.add("room", [record(1).model_copy(update={"id": "q:1"})])  # indexed live as a question
    twin: Callable[[HistoryRecord], str] = lambda r: f"q:{r.id.removeprefix('m:')}"  # noqa: E731
    seen: list[ImportProgress] = []
    summary = await import_into(memory, ImportJob("room", "a room", Fetched([record(n) for n in range(4)]), twin), None,
                                seen.append)  # fmt: skip
    assert (summary.imported, summary.duplicates) == (3, 0)
    assert seen[0].total == 3 and seen[-1].read == 3
    assert {i for _, i in memory.records} == {"q:1", "m:0", "m:2", "m:3"}  # m:1 is stored already, as q:1
