"""Documents: text, Markdown, PDF, .docx and HTML; unreadable files are problems and the rest imports."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.history.importers.base import Problem, WrongKind
from bridge.history.importers.registry import open_importer
from bridge.history.importers.text import PASSAGE_CHARS
from bridge.messages import HistoryRecord
from tests.import_fixtures import HTML_PAGE, docx_bytes, tiny_pdf


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    (root / "trips").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "house.md").write_text("# House\n\nThe wifi password is pinecone-42.\n\nBins go out on Tuesday.\n")
    (root / "trips" / "ticket.pdf").write_bytes(tiny_pdf(["Ferry to Lisbon", "Seat 12A, deck 3"]))
    (root / "handbook.docx").write_bytes(docx_bytes())
    (root / "recipes.html").write_bytes(HTML_PAGE)
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf at all")
    (root / "scan.pdf").write_bytes(tiny_pdf([""]))
    (root / "fake.docx").write_bytes(b"not a zip")
    (root / ".git" / "config.txt").write_text("[core]")
    (root / "~$handbook.docx").write_bytes(b"lock")
    (root / "photo.png").write_bytes(b"\x89PNG")
    return root


def run(path: Path) -> tuple[list[HistoryRecord], list[Problem]]:
    items = list(open_importer("files", path, "me").items())
    return [i for i in items if isinstance(i, HistoryRecord)], [i for i in items if isinstance(i, Problem)]


def test_every_kind_of_document(folder: Path) -> None:
    records, problems = run(folder)
    by_file: dict[str, list[HistoryRecord]] = {}
    for record in records:
        by_file.setdefault(record.conversation, []).append(record)
    assert sorted(by_file) == ["handbook.docx", "house.md", "recipes.html", "ticket.pdf"]
    pdf = by_file["ticket.pdf"]
    assert [(r.text, r.page, r.link) for r in pdf] == [
        ("Ferry to Lisbon", 1, "trips/ticket.pdf#passage-1"),
        ("Seat 12A, deck 3", 2, "trips/ticket.pdf#passage-2"),
    ]
    handbook = by_file["handbook.docx"][0].text
    assert handbook.startswith("Cabin handbook\n\nThe boiler switch")
    assert "Wifi | pinecone-42" in handbook and "Alarm | 1234" in handbook
    assert handbook.index("Alarm | 1234") < handbook.index("blue pot")  # tables stay where they were
    html = by_file["recipes.html"][0].text
    assert "Café au lait" in html and "Warm the milk" in html  # windows-1252 from <meta charset>
    assert "alert" not in html and "font:serif" not in html
    assert by_file["house.md"][0].text.startswith("# House")
    assert all(r.channel == "files" and r.time.tzinfo is not None for r in records)
    assert sorted(p.where for p in problems) == ["broken.pdf", "fake.docx", "scan.pdf"]
    assert "no text" in next(p.why for p in problems if p.where == "scan.pdf")


def test_ids_are_stable(folder: Path) -> None:
    first, _ = run(folder)
    again, _ = run(folder)
    assert [r.id for r in first] == [r.id for r in again]
    assert len({r.id for r in first}) == len(first)


def test_a_long_paragraph_is_cut_between_words(tmp_path: Path) -> None:
    words = [f"word{n}" for n in range(1500)]
    path = tmp_path / "extracted.txt"
    path.write_text(" ".join(words[:700]) + "\n" + " ".join(words[700:]))  # no blank line anywhere
    records, _ = run(path)
    assert len(records) > 1
    assert all(len(r.text) <= PASSAGE_CHARS for r in records)
    assert " ".join(" ".join(r.text.split()) for r in records).split() == words


def test_not_documents_are_refused_before_anything(tmp_path: Path) -> None:
    (tmp_path / "archive.zip").write_bytes(b"PK")
    for path in (tmp_path / "archive.zip", tmp_path / "missing", tmp_path):
        with pytest.raises(WrongKind):
            next(iter(open_importer("files", path, "me").items()))
