"""Importer for documents (.txt, .md, .pdf, .docx, .html): each file becomes passages of a few paragraphs.

Also the text extraction the mail importer uses for attachments (`extract_text`, `html_to_text`).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from adapters.importers import Problem, WrongKind
from bridge.messages import HistoryRecord

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
SUFFIXES = TEXT_SUFFIXES | {".pdf", ".docx", ".html", ".htm"}
PASSAGE_CHARS = 1200

# A section of a document: its page number (PDFs) or None, and its text.
Section = tuple[int | None, str]


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


def document_items(path: Path, person: str) -> Iterator[HistoryRecord | Problem]:
    """Records of every document under `path`, and a `Problem` for each that cannot be read."""
    root = path if path.is_dir() else path.parent
    for file in find_documents(path):
        relative = str(file.relative_to(root))
        try:
            sections = extract_text(file.name, file.read_bytes())
        except Exception as exc:  # PDF and docx readers raise many kinds; one bad file must not stop the rest
            yield Problem(relative, f"unreadable {file.suffix.lower()} file: {type(exc).__name__}: {exc}")
            continue
        if not any(text.strip() for _, text in sections):
            yield Problem(relative, "no text in it (a scanned PDF or an empty file?)")
            continue
        yield from _records(file, relative, sections, person)


def _records(file: Path, relative: str, sections: list[Section], person: str) -> Iterator[HistoryRecord]:
    when = datetime.fromtimestamp(file.stat().st_mtime, UTC)
    number = 0
    for page, text in sections:
        for passage in passages(text):
            digest = hashlib.sha1(f"{relative}\x00{number}\x00{passage}".encode()).hexdigest()[:20]
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
                extra={"page": page} if page is not None else {},
            )
            number += 1


def passages(text: str, limit: int = PASSAGE_CHARS) -> Iterator[str]:
    """Paragraphs joined up to about `limit` characters, so a passage keeps its context."""
    current = ""
    for paragraph in (p.strip() for p in text.split("\n\n")):
        if not paragraph:
            continue
        if len(paragraph) > limit * 2:
            # PDFs and some text files have no blank lines: cut such a paragraph between words.
            if current:
                yield current
            *full, current = _between_words(paragraph, limit)
            yield from full
            continue
        if current and len(current) + len(paragraph) > limit:
            yield current
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        yield current


def _between_words(text: str, limit: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    for token in re.findall(r"\S+\s*", text):
        while len(token) > limit:  # one "word" longer than a passage (a URL, a base64 blob)
            if current:
                chunks.append(current.rstrip())
                current = ""
            chunks.append(token[:limit])
            token = token[limit:]
        if current and len(current) + len(token) > limit:
            chunks.append(current.rstrip())
            current = ""
        current += token
    if current.strip():
        chunks.append(current.rstrip())
    return chunks or [""]


# -- text extraction -----------------------------------------------------------------------------------------


def extract_text(name: str, data: bytes) -> list[Section]:
    """The text of a document given by its file name and bytes; raises when the file is not what it claims."""
    suffix = Path(name).suffix.lower()
    if suffix == ".pdf":
        return pdf_pages(data)
    if suffix == ".docx":
        return [(None, docx_text(data))]
    if suffix in {".html", ".htm"}:
        return [(None, html_to_text(_decode_html(data)))]
    return [(None, data.decode("utf-8", errors="replace"))]


def pdf_pages(data: bytes) -> list[Section]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        raise ValueError("the PDF is encrypted with a password")
    return [(number, page.extract_text() or "") for number, page in enumerate(reader.pages, start=1)]


def docx_text(data: bytes) -> str:
    """Paragraphs and tables of a .docx in document order, a blank line between blocks."""
    from docx import Document
    from docx.table import Table

    blocks: list[str] = []
    for block in Document(io.BytesIO(data)).iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                cells = list(dict.fromkeys(cell.text.strip() for cell in row.cells))  # merged cells repeat
                blocks.append(" | ".join(c for c in cells if c))
        else:
            blocks.append(block.text)
    return "\n\n".join(b for b in blocks if b.strip())


def _decode_html(data: bytes) -> str:
    from bs4 import UnicodeDammit

    # Honours a <meta charset> or BOM, then guesses; never fails.
    return UnicodeDammit(data, is_html=True).unicode_markup or data.decode("utf-8", errors="replace")


def html_to_text(html: str) -> str:
    """Readable text of an HTML page or mail: paragraphs kept, blockquotes as "> " lines, scripts dropped."""
    import html2text

    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: passages and quote detection work on whole lines
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_links = True
    converter.unicode_snob = True
    return converter.handle(html).strip()


class FilesImporter:
    kind = "files"

    def __init__(self, path: Path, person: str) -> None:
        self.path = path
        self.person = person

    def check(self) -> None:
        try:
            find_documents(self.path)
        except NotDocuments as exc:
            raise WrongKind(str(exc)) from None

    def items(self) -> Iterator[HistoryRecord | Problem]:
        self.check()
        yield from document_items(self.path, self.person)
