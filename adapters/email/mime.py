"""What a mail says: its body as text (quotes and signature set apart), its attachments, its thread.

Shared by the mbox/Maildir importers and the live email adapter. Never raises on a badly made mail: unknown
charsets and broken transfer encodings decode with replacement characters.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message

from bridge.history.importers.text import html_to_text


@dataclass
class MailText:
    new_text: str  # what the sender wrote in this mail
    quoted: str  # the earlier mails it quotes ("> " lines, "On ... wrote:", Outlook's original message)
    signature: str  # after the "-- " line
    from_html: bool  # the mail had no usable plain text part


@dataclass(frozen=True)
class MailAttachment:
    name: str
    mime_type: str
    data: bytes


_SIGNATURE = re.compile(r"^-- ?$")
_ORIGINAL = re.compile(
    r"^\s*-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine|Mensaje original)\s*-{2,}\s*$",
    re.IGNORECASE,
)
# Attributions always carry a date or time; requiring a digit spares plain sentences like "The teacher wrote:".
_ATTRIBUTION = re.compile(
    r"^(?=.*\d)\s*(?:On\s.+\swrote|Am\s.+\sschrieb\s.+|Le\s.+\sa\sécrit|El\s.+\sescribió)\s?:\s*$",
    re.IGNORECASE | re.DOTALL,
)
_OUTLOOK_FROM = re.compile(r"^\s*\*?(?:From|Von|De)\s?:\*?\s+\S", re.IGNORECASE)
_OUTLOOK_SENT = re.compile(r"^\s*\*?(?:Sent|Date|Gesendet|Datum|Envoyé)\s?:\*?\s+\S", re.IGNORECASE)
_RULE = re.compile(r"^\s*_{10,}\s*$")
_REPLY_PREFIX = re.compile(
    r"^\s*(?:(?:re|fwd?|aw|wg|sv|vs|antw|tr|rif)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*)+", re.IGNORECASE
)
_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
QUOTE_LOOKAHEAD = 4  # lines between Outlook's "From:" and "Sent:"
ATTRIBUTION_CHARS = 300  # longer lines are text, not an "On <date>, <name> wrote:"
FORWARD_DEPTH = 3  # mails forwarded inside forwarded mails, read this deep


def mail_text(msg: EmailMessage | Message) -> MailText:
    """The mail's own words, with quoted replies and the signature set apart."""
    text, from_html = _body(msg)
    new, quoted, signature = split_reply(text)
    return MailText(new_text=new, quoted=quoted, signature=signature, from_html=from_html)


def _body(msg: EmailMessage | Message, depth: int = 0) -> tuple[str, bool]:
    """The plain text body, or the HTML body made readable when the plain one is missing or blank; then the text
    of each mail forwarded as an attachment (message/rfc822, as Gmail and Outlook forward), a few levels deep."""
    plain, html = _body_parts(msg)
    text, from_html = "", False
    if plain is not None and (found := decoded_text(plain)).strip():
        text = found
    elif html is not None:
        text, from_html = html_to_text(decoded_text(html)), True
    forwarded = [_forwarded(inner, depth) for inner in _attached_mails(msg)] if depth < FORWARD_DEPTH else []
    return "\n\n".join(part for part in (text, *forwarded) if part.strip()), from_html


def _attached_mails(msg: EmailMessage | Message) -> Iterator[Message]:
    if not isinstance(msg, EmailMessage):
        return
    try:
        for part in msg.iter_attachments():
            if part.get_content_type() == "message/rfc822" and isinstance(payload := part.get_payload(), list):
                yield from (inner for inner in payload[:1] if isinstance(inner, Message))
    except (KeyError, TypeError, ValueError, LookupError):
        return


def _forwarded(inner: Message, depth: int) -> str:
    """A forwarded mail's text under a header that says whose it is, as mail clients show it."""
    text, _ = _body(inner if isinstance(inner, EmailMessage) else EmailMessage(), depth + 1)
    if not text.strip():
        return ""
    # No "Date:" line under "From:": that pair is how an Outlook quote starts, and split_reply would set it apart.
    sent = f" ({inner['Date']})" if inner.get("Date") else ""
    head = [
        f"From: {inner['From']}{sent}" if inner.get("From") else "",
        f"Subject: {inner['Subject']}" if inner.get("Subject") else "",
    ]
    return "\n".join(["---------- Forwarded message ----------", *(line for line in head if line.strip()), "", text])


def _body_parts(msg: EmailMessage | Message) -> tuple[Message | None, Message | None]:
    if not isinstance(msg, EmailMessage):  # a compat32 Message has no get_body
        kind = msg.get_content_type()
        return (msg, None) if kind == "text/plain" else (None, msg) if kind == "text/html" else (None, None)
    try:
        return msg.get_body(preferencelist=("plain",)), msg.get_body(preferencelist=("html",))
    except (KeyError, TypeError, ValueError, LookupError):
        return None, None


def decoded_text(part: Message) -> str:
    """A text part's payload: transfer encoding undone, then its charset, with fallbacks that never fail."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    return decode_bytes(payload, part.get_content_charset())


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Declared charset if it decodes cleanly, else UTF-8, else the declared one (or Windows-1252) with
    replacement: mails often lie about their charset, and some name charsets no codec knows."""
    declared = _codec(charset)
    for codec in (declared, "utf-8"):
        if codec is None:
            continue
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return data.decode(declared or "cp1252", errors="replace")


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        return codecs.lookup(charset.strip().strip('"')).name
    except (LookupError, ValueError):
        return None


def split_reply(text: str) -> tuple[str, str, str]:
    """(new text, quoted text, signature) of a mail body."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cut = _unprefixed_quote_start(lines)
    head, quoted = lines[:cut], lines[cut:]
    signature: list[str] = []
    for index, line in enumerate(head):
        if _SIGNATURE.match(line):
            head, signature = head[:index], head[index + 1 :]
            break
    new: list[str] = []
    prefixed: list[str] = []
    skip = 0
    for index, line in enumerate(head):
        if skip:
            skip -= 1
            prefixed.append(line)
        elif line.lstrip().startswith(">"):
            prefixed.append(line)
        elif span := _attribution_span(head, index):
            skip = span - 1  # "On ... wrote:" before "> " lines: part of the quote
            prefixed.append(line)
        else:
            new.append(line)
    return _tidy(new), _tidy(prefixed + quoted), _tidy(signature)


def _unprefixed_quote_start(lines: list[str]) -> int:
    """Where a quote without "> " begins (Outlook's original message, or "On ... wrote:" then plain text)."""
    for index, line in enumerate(lines):
        if _ORIGINAL.match(line) or _is_outlook_header(lines, index):
            before = index - 1
            while before >= 0 and not lines[before].strip():
                before -= 1
            return before if before >= 0 and _RULE.match(lines[before]) else index
        span = _attribution_span(lines, index)
        if span and not _next_text(lines, index + span).lstrip().startswith(">"):
            return index
    return len(lines)


def _is_outlook_header(lines: list[str], index: int) -> bool:
    if not _OUTLOOK_FROM.match(lines[index]):
        return False
    return any(_OUTLOOK_SENT.match(line) for line in lines[index + 1 : index + 1 + QUOTE_LOOKAHEAD])


def _attribution_span(lines: list[str], index: int) -> int:
    """1 or 2 when an "On <date>, <name> wrote:" line (which clients wrap in two) starts at `index`, else 0."""
    line = lines[index]
    if line.lstrip().startswith(">") or not line.strip() or len(line) > ATTRIBUTION_CHARS:
        return 0
    if line.rstrip().endswith(":") and _ATTRIBUTION.match(line):  # the cheap test first: most lines fail it
        return 1
    following = lines[index + 1] if index + 1 < len(lines) else ""
    if following.rstrip().endswith(":") and _ATTRIBUTION.match(f"{line} {following}"):
        return 2
    return 0


def _next_text(lines: list[str], start: int) -> str:
    return next((line for line in lines[start:] if line.strip()), "")


def _tidy(lines: list[str]) -> str:
    text = "\n".join(line.rstrip() for line in lines).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def attachments(msg: EmailMessage | Message) -> list[MailAttachment]:
    """Every attached file (and forwarded mail), without the body parts."""
    plain, html = _body_parts(msg)
    found: list[MailAttachment] = []
    for part in _leaves(msg):
        if part is plain or part is html:
            continue
        name = _filename(part)
        disposition = (part.get_content_disposition() or "").lower()
        kind = part.get_content_type()
        if not name and disposition != "attachment" and kind != "message/rfc822":
            continue  # an unnamed inline part: another alternative of the body, not a file
        found.append(MailAttachment(name or _unnamed(part, len(found)), kind, _data(part)))
    return found


def _leaves(part: Message) -> Iterator[Message]:
    if part.get_content_type() == "message/rfc822":
        yield part  # a forwarded mail is one attachment, not parts of this mail
    elif part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield from _leaves(sub)
    else:
        yield part


def _filename(part: Message) -> str:
    try:
        return (part.get_filename() or "").strip()
    except (TypeError, ValueError, LookupError):
        return ""


def _unnamed(part: Message, index: int) -> str:
    if part.get_content_type() == "message/rfc822":
        return f"forwarded-{index + 1}.eml"
    extension = {"text/plain": ".txt", "text/html": ".html", "application/pdf": ".pdf"}.get(part.get_content_type(), "")
    return f"attachment-{index + 1}{extension}"


def _data(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        inner = inner[0] if isinstance(inner, list) and inner else inner
        try:
            return inner.as_bytes() if isinstance(inner, Message) else b""
        except (TypeError, ValueError, LookupError, UnicodeError):
            return b""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def header(msg: Message, name: str) -> str:
    """A header's decoded value, "" when it is missing or too broken to read."""
    try:
        value = msg.get(name)
        return "" if value is None else str(value).strip()
    except (TypeError, ValueError, LookupError, IndexError, AttributeError):
        return ""


def message_ids(value: str) -> list[str]:
    """The ids in a Message-ID, In-Reply-To or References header, without angle brackets."""
    found = _MESSAGE_ID.findall(value)
    return found if found else value.split()


def message_id(msg: Message) -> str:
    ids = message_ids(header(msg, "Message-ID"))
    return ids[0] if ids else ""


def thread_root(msg: Message) -> str:
    """The id of the mail that started this thread, as far as the mail's own headers tell."""
    for name in ("References", "In-Reply-To"):
        ids = message_ids(header(msg, name))
        if ids:
            return ids[0]  # References lists the thread from its root on
    if own := message_id(msg):
        return own
    # No ids at all: the subject is the only thread there is.
    return "subject:" + hashlib.sha1(normalized_subject(header(msg, "Subject")).lower().encode()).hexdigest()[:16]


def normalized_subject(subject: str) -> str:
    """The subject without "Re:", "Fwd:", "AW:", "WG:", "SV:" ... prefixes (repeated ones too)."""
    return " ".join(_REPLY_PREFIX.sub("", subject).split())


# The first empty line (or an empty first line): where the header block ends.
_HEADER_END = re.compile(rb"(?:\A|\n)(\r?\n)")
_FROM_HEADER = re.compile(rb"(?im)^from:[^\n]*(?:\n[ \t][^\n]*)*")
MAX_FROM_BYTES = 2048  # one address with a display name; a list of thousands takes seconds to parse
# Headers the stdlib parses as address lists: quadratic in their commas and quotes (60,000 commas: 13.7 s).
ADDRESS_HEADERS = (
    "from", "sender", "reply-to", "to", "cc", "bcc", "return-path",
    "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-bcc",
)  # fmt: skip
_ADDRESS_HEADER = re.compile(
    rb"(?im)^(" + b"|".join(name.encode() for name in ADDRESS_HEADERS) + rb"):([^\n]*(?:\n[ \t][^\n]*)*)"
)
# A declared container part (multipart/*, message/*), comments allowed before the type; each level of nesting needs
# one. The leading newline is a literal the regex engine finds fast; the first header line is matched on its own.
_CONTAINER = re.compile(rb"\ncontent-type:\s{0,200}(?:\([^()]{0,500}\)\s{0,200}){0,8}(?:multipart|message)\b", re.I)
_SCAN_WINDOW = 1 << 20  # a scan of a 24 MB mail in 1 MiB steps: no single call holds the GIL for long
_SCAN_OVERLAP = 2048  # longer than any match of _CONTAINER, so a match across two windows is still found


def header_block(raw: bytes, max_header_bytes: int) -> tuple[bytes, int] | None:
    """The header block (each line with its line end) and where the body starts; None when no empty line ends the
    header within `max_header_bytes` in a mail that is longer than that."""
    end = _HEADER_END.search(raw, 0, max_header_bytes + 4)
    if end is None:
        return None if len(raw) > max_header_bytes else (raw, len(raw))
    return raw[: end.start(1)], end.end(1)


def unreadable(
    raw: bytes,
    max_header_bytes: int,
    max_parts: int,
    max_address_bytes: int | None = None,
    max_addresses: int | None = None,
) -> str | None:
    """Why a mail is too costly to read, judged on its bytes before any parsing; None when it may be parsed.

    A mail of 10,000 MIME parts, or a From header of 16,000 addresses, took the stdlib parser 18-30 s: every
    bound here is checked first, in linear time. `max_address_bytes`, `max_addresses` (None: not checked) bound
    every address header, not only From."""
    block = header_block(raw, max_header_bytes)
    if block is None:
        return f"its header is over {max_header_bytes:,} bytes"
    head = block[0]
    sender = _FROM_HEADER.search(head)
    if sender is not None and len(sender.group()) > MAX_FROM_BYTES:
        return f"its From header is {len(sender.group()):,} bytes long"
    if max_address_bytes is not None or max_addresses is not None:
        if reason := _address_reason(head, max_address_bytes, max_addresses):
            return reason
    # Every MIME part starts with a boundary line "--boundary"; a body's "-- " signature line counts too.
    boundaries = sum(raw.count(b"\n--", start, end) for start, end in _windows(len(raw), 2))
    if boundaries > 2 * max_parts:
        return f"it has about {boundaries // 2:,} MIME parts (at most {max_parts:,} are read)"
    return None


def _address_reason(head: bytes, max_bytes: int | None, max_addresses: int | None) -> str | None:
    for match in _ADDRESS_HEADER.finditer(head):
        name, value = match.group(1).decode("ascii").title(), match.group(2)
        if max_bytes is not None and len(value) > max_bytes:
            return f"its {name} header is {len(value):,} bytes long"
        if max_addresses is not None and value.count(b",") >= max_addresses:
            return f"its {name} header names {value.count(b',') + 1:,} addresses or more"
    return None


def too_deep(raw: bytes, max_depth: int) -> str | None:
    """Why a mail nests too deeply to be parsed, judged on its bytes; None when it may be parsed. Each level of
    nesting needs a multipart or message part, so their count bounds the depth (a mail nested 1,000 deep made the
    stdlib parser raise RecursionError)."""
    found = 1 if _CONTAINER.match(b"\n" + raw[:_SCAN_OVERLAP]) else 0
    for start, end in _windows(len(raw), _SCAN_OVERLAP):
        found += sum(1 for match in _CONTAINER.finditer(raw, start, end) if match.start() < start + _SCAN_WINDOW)
        if found > max_depth:
            return f"it declares more than {max_depth:,} multipart or message parts (nested too deeply to read)"
    return None


def _windows(size: int, overlap: int) -> Iterator[tuple[int, int]]:
    """(start, end) of 1 MiB steps over `size` bytes, each reaching `overlap` bytes into the next."""
    for start in range(0, max(size, 1), _SCAN_WINDOW):
        yield start, min(size, start + _SCAN_WINDOW + overlap)
