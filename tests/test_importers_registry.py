"""The importer registry: kinds, detection, and the promise that a wrong kind is refused before anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.importers import KINDS, Problem, WrongKind, detect_kind, open_importer
from tests.import_fixtures import (
    ANDROID_US,
    IOS_DE,
    mail,
    telegram_chat,
    tiny_pdf,
    write_json,
    write_maildir,
    write_mbox,
    write_whatsapp_txt,
    write_whatsapp_zip,
)

LOCOMO_26 = Path("/work/shared/datasets/locomo/26.json")


@pytest.fixture
def exports(tmp_path: Path) -> dict[str, Path]:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("hello")
    return {
        "whatsapp": write_whatsapp_txt(tmp_path, ANDROID_US),
        "whatsapp-zip": write_whatsapp_zip(tmp_path, IOS_DE),
        "telegram": write_json(tmp_path / "ChatExport" / "result.json", telegram_chat()),
        "telegram-folder": tmp_path / "ChatExport",
        "mbox": write_mbox(tmp_path / "archive.mbox", [mail("x", "y")]),
        "maildir": write_maildir(tmp_path / "Maildir", {"cur/1.M1.host:2,S": mail("x", "y")}),
        "files": notes,
        "files-pdf": _write(tmp_path / "ticket.pdf", tiny_pdf(["Seat 12A"])),
        "locomo": LOCOMO_26,
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_detect_kind(exports: dict[str, Path], tmp_path: Path) -> None:
    detected = {name: detect_kind(path) for name, path in exports.items()}
    assert detected == {name: name.split("-")[0] for name in exports}
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    assert detect_kind(tmp_path / "photo.png") is None
    assert detect_kind(tmp_path / "missing") is None


def test_every_other_kind_is_refused_before_anything(exports: dict[str, Path]) -> None:
    for name, path in exports.items():
        right = name.split("-")[0]
        for kind in KINDS:
            if kind == right or (kind == "files" and right == "whatsapp" and path.suffix == ".txt"):
                continue  # a chat .txt is also a text document
            importer = open_importer(kind, path, "me")
            with pytest.raises(WrongKind):
                importer.check()
            with pytest.raises(WrongKind):
                next(iter(importer.items()))


def test_each_kind_yields_records_of_its_channel(exports: dict[str, Path]) -> None:
    channels = {"mbox": "email", "maildir": "email"}
    for name, path in exports.items():
        kind = name.split("-")[0]
        importer = open_importer(kind, path, "me")
        assert importer.kind == kind
        records = [i for i in importer.items() if not isinstance(i, Problem)]
        assert records and {r.channel for r in records} == {channels.get(kind, kind)}, name
        assert {r.person for r in records} == {"me"}
        assert len({r.source for r in records if r.channel != "files"}) <= 1, name


def test_unknown_kind_and_option() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        open_importer("icq", Path("x"), "me")
    with pytest.raises(ValueError, match="date_order"):
        open_importer("whatsapp", Path("x"), "me", date_order="ydm")
    assert str(Problem("chat.txt:3", "bad date")) == "chat.txt:3: bad date"
