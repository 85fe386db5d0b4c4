"""Importer for a folder of documents (.txt, .md): each file becomes passages of a few paragraphs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from bridge.messages import HistoryRecord

SUFFIXES = {".txt", ".md", ".markdown"}
PASSAGE_CHARS = 1200


class NotDocuments(ValueError):
    pass


def find_documents(path: Path) -> list[Path]:
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        raise NotDocuments(f"{path} does not exist")
    found = [f for f in files if f.suffix.lower() in SUFFIXES]
    if not found:
        raise NotDocuments(f"{path} holds no documents of a known kind ({', '.join(sorted(SUFFIXES))})")
    return found


def read_documents(path: Path, person: str) -> Iterator[HistoryRecord]:
    root = path if path.is_dir() else path.parent
    for file in find_documents(path):
        text = file.read_text(encoding="utf-8", errors="replace")
        when = datetime.fromtimestamp(file.stat().st_mtime, UTC)
        relative = str(file.relative_to(root))
        for number, passage in enumerate(passages(text)):
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
            )


def passages(text: str, limit: int = PASSAGE_CHARS) -> Iterator[str]:
    """Paragraphs joined up to about `limit` characters, so a passage keeps its context."""
    current = ""
    for paragraph in (p.strip() for p in text.split("\n\n")):
        if not paragraph:
            continue
        if current and len(current) + len(paragraph) > limit:
            yield current
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
        while len(current) > limit * 2:
            yield current[:limit]
            current = current[limit:]
    if current:
        yield current
