"""Importer for documents (.txt, .md, .pdf, .docx, .html): each file becomes passages of a few paragraphs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from bridge.config import ImportSettings
from bridge.history.importers.base import CheckedOnce, Problem, WrongKind, describe, guarded, import_limits
from bridge.history.importers.text import SUFFIXES, Section, extract_text, passages
from bridge.messages import HistoryRecord


class NotDocuments(ValueError):
    pass


def find_documents(path: Path) -> list[Path]:
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
    else:
        raise NotDocuments(f"{path} does not exist")
    found = [f for f in files if f.suffix.lower() in SUFFIXES]
    if not found:
        raise NotDocuments(f"{path} holds no documents of a known kind ({', '.join(sorted(SUFFIXES))})")
    return found


def _hidden(relative: Path) -> bool:
    # ".git/...", ".DS_Store", and Word's "~$name.docx" lock files are not the person's documents.
    return any(part.startswith((".", "~$")) for part in relative.parts)


def document_items(path: Path, person: str, bounds: ImportSettings | None = None) -> Iterator[HistoryRecord | Problem]:
    """Records of every document under `path`, and a `Problem` for each that cannot be read (or only in part)."""
    bounds = import_limits(bounds)
    root = path if path.is_dir() else path.parent
    for file in find_documents(path):
        relative = str(file.relative_to(root))
        yield from guarded(_document(file, relative, person, bounds), relative)


def _document(file: Path, relative: str, person: str, bounds: ImportSettings) -> Iterator[HistoryRecord | Problem]:
    try:
        data = _read(file, bounds.max_file_bytes)
        extracted = extract_text(file.name, data, bounds)
    except Exception as exc:  # PDF and docx readers raise many kinds; one bad file must not stop the rest
        yield Problem(relative, f"unreadable {file.suffix.lower()} file: {describe(exc)}")
        return
    del data
    for why in extracted.cut:
        yield Problem(relative, why)
    if not any(text.strip() for _, text in extracted.sections):
        yield Problem(relative, "no text in it (a scanned PDF or an empty file?)")
        return
    yield from _records(file, relative, extracted.sections, person)


def _read(file: Path, limit: int) -> bytes:
    """A document's bytes, refused past `limit` (read bounded: the file may grow while it is read)."""
    if file.stat().st_size > limit:
        raise ValueError(f"{file.stat().st_size:,} bytes (at most {limit:,}: CONFIDE_IMPORTS__MAX_FILE_BYTES)")
    with file.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"over {limit:,} bytes (CONFIDE_IMPORTS__MAX_FILE_BYTES)")
    return data


def _records(file: Path, relative: str, sections: list[Section], person: str) -> Iterator[HistoryRecord]:
    when = datetime.fromtimestamp(file.stat().st_mtime, UTC)
    number = 0
    for page, text in sections:
        for passage in passages(text):
            digest = hashlib.sha1(f"{relative}\x00{number}\x00{passage}".encode("utf-8", "surrogatepass")).hexdigest()[
                :20
            ]
            yield HistoryRecord(
                id=f"file:{digest}",
                person=person,
                channel="files",
                conversation=file.name,
                author="",
                time=when,
                text=passage,
                source=f"file:{file.resolve()}",
                link=f"{relative}#passage-{number + 1}",
                page=page,
            )
            number += 1


class FilesImporter(CheckedOnce):
    kind = "files"
    chat = False
    detect_order = 90  # last: it accepts any .txt, chat exports included
    summary = "Import documents: .txt, .md, .pdf, .docx, .html."
    path_help = "A document or a folder of documents"
    options: Mapping[str, str] = {}

    def __init__(self, path: Path, person: str, limits: ImportSettings | None = None) -> None:
        self.path = path
        self.person = person
        self.limits = limits

    def sniff(self) -> None:
        try:
            find_documents(self.path)
        except NotDocuments as exc:
            raise WrongKind(str(exc)) from None

    def items(self) -> Iterator[HistoryRecord | Problem]:
        self.ensure_checked()
        yield from guarded(document_items(self.path, self.person, self.limits), self.path.name)
