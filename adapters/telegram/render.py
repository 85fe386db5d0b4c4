"""Replies as Telegram text: split under the length limit at sensible boundaries, and HTML-escaped."""

from __future__ import annotations

import html
import re

from bridge.messages import OutgoingReply

# Telegram's limit is 4096 characters of the parsed text, counted in UTF-16 code units.
MAX_MESSAGE = 4096
_SENTENCE_END = re.compile(r"[.!?…][)\"'»”]*\s")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fitting_prefix(text: str, limit: int) -> int:
    """How many characters of `text` fit into `limit` UTF-16 code units."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _cut(window: str) -> int:
    """Where to end a part within `window`: paragraph, then line, then sentence, then word, then hard."""
    floor = len(window) // 4  # a boundary in the first quarter would leave a tiny part
    for boundary in ("\n\n", "\n"):
        at = window.rfind(boundary)
        if at > floor:
            return at
    sentences = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() > floor]
    if sentences:
        return sentences[-1]
    at = window.rfind(" ")
    return at if at > floor else len(window)


def split_text(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Parts of at most `limit` UTF-16 units; whitespace at a boundary is dropped, nothing else."""
    parts: list[str] = []
    rest = text.strip()
    while utf16_len(rest) > limit:
        window = rest[: _fitting_prefix(rest, limit)]
        end = _cut(window)
        parts.append(rest[:end].rstrip())
        rest = rest[end:].lstrip()
    if rest or not parts:
        parts.append(rest)
    return parts


def reply_parts(reply: OutgoingReply, limit: int = MAX_MESSAGE) -> list[str]:
    """The plain text of a reply (answer, then its sources) in sendable parts."""
    return split_text(reply.render_plain(), limit)


def to_html(part: str) -> str:
    """A plain part as Telegram HTML: everything escaped, the sources heading in bold."""
    lines = [html.escape(line, quote=False) for line in part.split("\n")]
    return "\n".join("<b>Sources:</b>" if line == "Sources:" else line for line in lines)


def preview(text: str, limit: int = MAX_MESSAGE) -> str:
    """A streaming answer as one message: its beginning, marked as continuing when it is longer."""
    text = text.strip() or "…"
    if utf16_len(text) <= limit:
        return text
    return text[: _fitting_prefix(text, limit - 1)] + "…"
