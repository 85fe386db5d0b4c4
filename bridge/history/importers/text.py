"""Document text: extraction from .txt, .md, .pdf, .docx and .html, and its cutting into passages.

Shared by the files importer and by mail (bodies in HTML, attachments), so it lives apart from both.
The document libraries are imported when a file of their kind is read: most imports never need them.
Every extraction runs on a `Budget` of characters and seconds: a bomb or a pathological file gives what was
read until the budget ran out, and says so, instead of holding the import for minutes.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.history.importers.archive import check_archive

if TYPE_CHECKING:
    from bridge.config import ImportSettings

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
SUFFIXES = TEXT_SUFFIXES | {".pdf", ".docx", ".html", ".htm"}
PASSAGE_CHARS = 1200
# HTML up to this size is converted in one call (exactly as before budgets); bigger pages are fed in pieces
# so that the budget is looked at between them.
HTML_WHOLE_CHARS = 1 << 20
HTML_PIECE_CHARS = 1 << 16
HTML_SNIFF_BYTES = 1 << 16  # how much of a big page tells its encoding

# A section of a document: its page number (PDFs) or None, and its text.
Section = tuple[int | None, str]


class Budget:
    """What one document may still cost: characters of text and seconds of reading. `cut` says what was left
    out and why (a bound reached), `stopped` whether reading must end."""

    def __init__(self, chars: int, seconds: float) -> None:
        self.chars = chars
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.cut: list[str] = []
        self.stopped = False

    @classmethod
    def of(cls, limits: ImportSettings) -> Budget:
        return cls(limits.max_text_chars, limits.max_document_seconds)

    def take(self, text: str) -> str:
        """`text`, or as much of it as the characters left allow."""
        if self.stopped:
            return ""
        if len(text) > self.chars:
            self.stop("its text was cut at CONFIDE_IMPORTS__MAX_TEXT_CHARS characters")
            text = text[: self.chars]
        self.chars -= len(text)
        return text

    def spent(self) -> bool:
        """Whether reading must stop: the characters are used up, or the time is."""
        if not self.stopped and time.monotonic() > self.deadline:
            self.stop(f"reading it took over {self.seconds:g} s (CONFIDE_IMPORTS__MAX_DOCUMENT_SECONDS): cut there")
        return self.stopped

    def stop(self, why: str) -> None:
        self.cut.append(why)
        self.stopped = True


@dataclass
class Extracted:
    """A document's text, and why some of it was left out (a bound was reached), for a `Problem`."""

    sections: list[Section]
    cut: list[str] = field(default_factory=list)


def extract_text(name: str, data: bytes, limits: ImportSettings | None = None) -> Extracted:
    """The text of a document given by its file name and bytes; raises when the file is not what it claims
    (`archive.TooBig` when it would unpack past the bounds)."""
    from bridge.history.importers.base import import_limits

    bounds = import_limits(limits)
    budget = Budget.of(bounds)
    suffix = Path(name).suffix.lower()
    if suffix == ".pdf":
        sections = pdf_pages(data, budget, bounds.max_pdf_pages, bounds.max_member_bytes)
    elif suffix == ".docx":
        check_archive(data, bounds.max_member_bytes, bounds.max_archive_bytes, bounds.max_compression_ratio)
        sections = [(None, docx_text(data, budget))]
    elif suffix in {".html", ".htm"}:
        sections = [(None, html_to_text(_decode_html(data), budget))]
    else:
        sections = [(None, budget.take(data.decode("utf-8", errors="replace")))]
    return Extracted([(page, clean_text(text)) for page, text in sections], budget.cut)


def pdf_pages(
    data: bytes, budget: Budget | None = None, max_pages: int = 0, max_stream_bytes: int = 0
) -> list[Section]:
    """Each page's text, up to `max_pages` pages (0: all) and while the budget lasts; streams inflate to at
    most `max_stream_bytes` each (0: pypdf's own bound)."""
    from pypdf import PdfReader

    budget = budget or Budget(1 << 62, 1e9)
    with _pdf_bounds(max_stream_bytes):
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ValueError("the PDF is encrypted with a password")
        count = len(reader.pages)
        if max_pages and count > max_pages:
            budget.cut.append(f"it has {count:,} pages: read the first {max_pages:,} (CONFIDE_IMPORTS__MAX_PDF_PAGES)")
        pages: list[Section] = []
        for number in range(1, min(count, max_pages or count) + 1):
            if budget.spent():
                break
            pages.append((number, budget.take(reader.pages[number - 1].extract_text() or "")))
    return pages


def _pdf_bounds(max_stream_bytes: int) -> Any:
    """pypdf's own bounds on what one stream inflates to, lowered to ours where this pypdf has them (7+)."""
    import contextlib

    import pypdf

    apply = getattr(pypdf, "apply_configuration", None)
    if not max_stream_bytes or apply is None:
        return contextlib.nullcontext()
    names = ("zlib_maximum_output_length", "lzw_maximum_output_length", "run_length_maximum_output_length")
    return apply(**{name: max_stream_bytes for name in names})


def docx_text(data: bytes, budget: Budget | None = None) -> str:
    """Paragraphs and tables of a .docx in document order, a blank line between blocks."""
    from docx import Document
    from docx.table import Table

    budget = budget or Budget(1 << 62, 1e9)
    blocks: list[str] = []
    for block in Document(io.BytesIO(data)).iter_inner_content():
        if budget.spent():
            break
        if isinstance(block, Table):
            for row in block.rows:
                if budget.spent():
                    break
                cells = list(dict.fromkeys(_row_texts(row)))  # merged cells repeat
                blocks.append(budget.take(" | ".join(c for c in cells if c)))
        else:
            blocks.append(budget.take(block.text))
    return "\n\n".join(b for b in blocks if b.strip())


def _row_texts(row: Any) -> Iterator[str]:
    """The text of each cell of a table row, as python-docx's `row.cells` gives it once merged cells are
    de-duplicated, without expanding a cell's `gridSpan` (a broken file's 10^9 columns) or walking vertical
    merges recursively."""
    from docx.table import _Cell

    for tc in row._tr.tc_lst:
        root = tc
        for _ in range(10_000):  # a "continue" cell shows the text of the cell starting its vertical merge
            if root.vMerge != "continue":
                break
            try:
                root = root._tc_above
            except (ValueError, IndexError, AttributeError):
                break
        yield _Cell(root, row.table).text.strip()


def _decode_html(data: bytes) -> str:
    from bs4 import UnicodeDammit

    if len(data) <= HTML_WHOLE_CHARS:
        # Honours a <meta charset> or BOM, then guesses; never fails.
        return UnicodeDammit(data, is_html=True).unicode_markup or data.decode("utf-8", errors="replace")
    # A big page: its encoding is told from its start. Guessing over megabytes (a declared charset that does
    # not fit sends UnicodeDammit to charset detection) took a hundred MB and more per 5 MB.
    head = data[: data.rfind(b">", 0, HTML_SNIFF_BYTES) + 1 or HTML_SNIFF_BYTES]  # not inside a character
    found = UnicodeDammit(head, is_html=True).original_encoding
    declared = found if found and found != "ascii" else None  # an ASCII start says nothing of the rest
    for codec in (declared, "utf-8"):
        if codec is None:
            continue
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode(declared or "windows-1252", errors="replace")


def html_to_text(html: str, budget: Budget | None = None) -> str:
    """Readable text of an HTML page or mail: paragraphs kept, blockquotes as "> " lines, scripts dropped.

    html2text reads about half a megabyte a second: a big page is fed in pieces and stops when the budget
    (by default the default bounds') is spent."""
    import html2text

    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: passages and quote detection work on whole lines
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_links = True
    converter.unicode_snob = True
    if len(html) <= HTML_WHOLE_CHARS:
        return (budget.take(converter.handle(html)) if budget else converter.handle(html)).strip()
    budget = budget or _default_budget()
    converter.start = True
    produced = counted = 0
    for start in range(0, len(html), HTML_PIECE_CHARS):
        converter.feed(html[start : start + HTML_PIECE_CHARS])
        produced += sum(len(piece) for piece in converter.outtextlist[counted:])
        counted = len(converter.outtextlist)
        if produced > budget.chars or budget.spent():
            break  # enough text for the budget (`take` cuts and says so), or out of time
    converter.feed("")
    return budget.take(converter.optwrap(converter.finish())).strip()


def _default_budget() -> Budget:
    from bridge.config import ImportSettings

    # The defaults, not the environment: mail bodies (live mail too) are converted where no settings are at hand.
    return Budget.of(ImportSettings.model_construct())


def clean_text(text: str) -> str:
    """Text every encoder and store accepts: lone surrogates (JSON escapes like "\\ud800", header bytes the
    mail parser could not decode) become U+FFFD, pairs written as two escapes become their character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def passages(text: str, limit: int = PASSAGE_CHARS) -> Iterator[str]:
    """Paragraphs joined up to about `limit` characters, so a passage keeps its context. Streams: a text of
    millions of characters is never held twice, cut or whole."""
    current = ""
    for paragraph in (p.strip() for p in text.split("\n\n")):
        if not paragraph:
            continue
        if len(paragraph) > limit * 2:
            # PDFs and some text files have no blank lines: cut such a paragraph between words.
            if current:
                yield current
            last = ""
            for number, chunk in enumerate(_between_words(paragraph, limit)):
                if number:
                    yield last
                last = chunk
            current = last
            continue
        if current and len(current) + len(paragraph) > limit:
            yield current
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        yield current


def _between_words(text: str, limit: int) -> Iterator[str]:
    current = ""
    for match in re.finditer(r"\S+\s*", text):
        token = match.group()
        if len(token) > limit:  # one "word" longer than a passage (a URL, a base64 blob): cut in pieces
            if current:
                yield current.rstrip()
                current = ""
            pieces = (len(token) - 1) // limit  # whole pieces, leaving at most `limit` characters
            for start in range(0, pieces * limit, limit):
                yield token[start : start + limit]
            token = token[pieces * limit :]
        if current and len(current) + len(token) > limit:
            yield current.rstrip()
            current = ""
        current += token
    if current.strip():
        yield current.rstrip()
