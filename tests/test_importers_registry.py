"""The importer registry: kinds, detection, and the promise that a wrong kind is refused before anything."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bridge.history.importers.base import Problem, WrongKind
from bridge.history.importers.registry import detect_kind, find_source, importer_classes, kinds, open_importer
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
        for kind in kinds():
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


def test_kinds_come_from_the_entry_points_and_say_whether_they_are_chat() -> None:
    chat = {kind: open_importer(kind, Path("x"), "me").chat for kind in kinds()}
    assert chat == {
        "files": False, "mbox": False, "maildir": False, "telegram": True, "whatsapp": True,
    }  # fmt: skip
    classes = importer_classes()
    assert list(classes) == kinds() and all(c.summary and c.path_help for c in classes.values())
    assert classes["whatsapp"].options.keys() == {"date_order"}
    assert max(classes, key=lambda k: classes[k].detect_order) == "files"  # it accepts any .txt: sniffed last


def test_find_source(exports: dict[str, Path], tmp_path: Path) -> None:
    source = find_source(exports["whatsapp"], "me")
    assert source is not None and source.kind == "whatsapp"  # a chat .txt, though "files" accepts it too
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    assert find_source(tmp_path / "photo.png", "me") is None


def test_the_importer_core_never_imports_adapters() -> None:
    history = Path(__file__).resolve().parent.parent / "bridge" / "history"
    files = [*(history / "importers").glob("*.py"), history / "ingest.py", history / "context_windows.py"]
    assert len(files) > 5  # the folders exist: a move must not leave this checking nothing
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] == "adapters"], file.name


def test_unknown_kind_and_option() -> None:
    with pytest.raises(ValueError, match="unknown kind 'icq'; known: files, maildir, mbox, telegram, whatsapp"):
        open_importer("icq", Path("x"), "me")
    assert open_importer("telegram", Path("x"), "me", date_order=None).kind == "telegram"  # unset: not passed
    with pytest.raises(ValueError, match="date_order"):
        open_importer("whatsapp", Path("x"), "me", date_order="ydm")
    assert str(Problem("chat.txt:3", "bad date")) == "chat.txt:3: bad date"
