"""Document text: extraction from .txt, .md, .pdf, .docx and .html, and its cutting into passages.

Shared by the files importer and by mail (bodies in HTML, attachments), so it lives apart from both.
The document libraries are imported when a file of their kind is read: most imports never need them.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
SUFFIXES = TEXT_SUFFIXES | {".pdf", ".docx", ".html", ".htm"}
PASSAGE_CHARS = 1200

# A section of a document: its page number (PDFs) or None, and its text.
Section = tuple[int | None, str]


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
