"""Importers of mail archives: mbox files (Thunderbird, Gmail Takeout, Apple Mail's `.mbox` folders) and Maildir.

One record per mail (its own words; quotes and signature stored beside them), plus one per passage of each text, PDF,
.docx or HTML attachment. Mails are read one at a time: an mbox is indexed by offsets (the stdlib `mailbox`
table of contents) and never held in memory whole. Each mail is judged on its bytes before it is parsed (its
size, header and MIME parts: CONFIDE_IMPORTS__*), and anything that cannot be read is a `Problem` for that
mail or attachment alone.
"""

from __future__ import annotations

import hashlib
import mailbox
import os
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from adapters.email.mime import (
    MailAttachment,
    attachments,
    header,
    mail_text,
    message_id,
    message_ids,
    normalized_subject,
    thread_root,
    unreadable,
)
from bridge.config import ImportSettings
from bridge.history.importers.base import (
    Problem,
    WrongKind,
    cut_problem,
    describe,
    guarded,
    import_limits,
    stable_id,
)
from bridge.history.importers.text import SUFFIXES, extract_text, passages
from bridge.messages import HistoryRecord

MBOX_HEAD_BYTES = 4096  # an mbox starts with its first "From " line
QUOTED_CHARS = 20_000  # a long thread's quote is repeated in every reply: keep extra small in the index
THREAD_MEMORY = 100_000  # message ids remembered to thread replies that lack References
_MAIL_HEADERS = ("from", "date", "subject", "message-id", "to")
_FROM_LINE_DATE = re.compile(r"(\w{3}) +(\w{3}) +(\d{1,2}) +(\d{1,2}:\d{2}:\d{2})(?: +[+-]?\d{4})? +(\d{4})")
# mboxrd writers escape body lines starting "From " as ">From " (and ">From " as ">>From "): undo one level.
_FROM_ESCAPE = re.compile(rb"(?m)^>(>*From )")
_PARSER = BytesParser(policy=policy.default)


class _Mails:
    """Turns one mail's bytes into records, remembering thread roots across the mails of one import."""

    def __init__(self, person: str, source: str, bounds: ImportSettings) -> None:
        self.person = person
        self.source = source
        self.bounds = bounds
        self._roots: OrderedDict[str, str] = OrderedDict()

    def records(
        self, data: bytes, where: str, fallback_time: datetime | None, extra: dict[str, Any]
    ) -> Iterator[HistoryRecord | Problem]:
        # A mail of 10,000 MIME parts or a header of megabytes takes the parser minutes: judged on its bytes first.
        if why := unreadable(data, self.bounds.max_mail_header_bytes, self.bounds.max_mime_parts):
            yield Problem(where, f"not read: {why} (CONFIDE_IMPORTS__MAX_MIME_PARTS, __MAX_MAIL_HEADER_BYTES)")
            return
        try:
            parsed = _parse(data, fallback_time)
            if isinstance(parsed, str):
                yield Problem(where, parsed)
                return
            msg, time = parsed
            files = attachments(msg)
            record = self._mail_record(msg, data, where, time, {**extra, "attachments": [a.name for a in files]})
        except Exception as exc:  # the email package has many ways to fail on a broken mail; skip just that one
            yield Problem(where, f"unreadable mail: {describe(exc)}")
            return
        if len(record.text) > (limit := self.bounds.max_message_chars):
            yield cut_problem(where, "a mail body", len(record.text), limit, "max_message_chars")
            record.text = record.text[:limit]
        yield record
        for index, attachment in enumerate(files):
            yield from self._attachment_records(record, index, attachment, where)

    def _mail_record(
        self, msg: EmailMessage, data: bytes, where: str, time: datetime, extra: dict[str, Any]
    ) -> HistoryRecord:
        own_id = message_id(msg)
        body = mail_text(msg)
        info: dict[str, Any] = {k: v for k, v in extra.items() if v}
        info.update(thread=self._thread(msg, own_id), from_html=body.from_html)
        if own_id:
            info["message_id"] = own_id
        for name, key in (("In-Reply-To", "in_reply_to"), ("To", "to"), ("Cc", "cc")):
            if value := header(msg, name):
                info[key] = value
        subject = normalized_subject(header(msg, "Subject"))
        return HistoryRecord(
            # The Message-ID names the mail wherever it is filed; without one, its bytes do.
            id=stable_id("email", own_id) if own_id else stable_id("email", "raw", hashlib.sha1(data).hexdigest()),
            person=self.person,
            channel="email",
            conversation=subject or "(no subject)",
            author=header(msg, "From"),
            time=time,
            text=body.new_text,
            source=self.source,
            link=own_id or where,
            quoted=body.quoted[:QUOTED_CHARS] or None,
            signature=body.signature[:QUOTED_CHARS] or None,
            extra=info,
        )

    def _thread(self, msg: Message, own_id: str) -> str:
        references = message_ids(header(msg, "References"))
        parents = message_ids(header(msg, "In-Reply-To"))
        if not references and parents:
            # Some clients send only In-Reply-To: the parent, if seen, knows the real root.
            root = self._roots.get(parents[0], parents[0])
        else:
            root = thread_root(msg)
        if own_id:
            self._roots[own_id] = root
            if len(self._roots) > THREAD_MEMORY:
                self._roots.popitem(last=False)
        return root

    def _attachment_records(
        self, mail: HistoryRecord, index: int, attachment: MailAttachment, where: str
    ) -> Iterator[HistoryRecord | Problem]:
        if Path(attachment.name).suffix.lower() not in SUFFIXES:
            return
        named = f"{where} attachment {attachment.name!r}"
        if len(attachment.data) > (limit := self.bounds.max_attachment_bytes):
            size = len(attachment.data)
            yield Problem(named, f"not read: {size:,} bytes (at most {limit:,}: CONFIDE_IMPORTS__MAX_ATTACHMENT_BYTES)")
            return
        try:
            extracted = extract_text(attachment.name, attachment.data, self.bounds)
        except Exception as exc:  # a broken PDF attachment must not lose the mail or the rest of the archive
            yield Problem(named, f"unreadable: {describe(exc)}")
            return
        for why in extracted.cut:
            yield Problem(named, why)
        number = 0
        for page, text in extracted.sections:
            for passage in passages(text):
                number += 1
                extra: dict[str, Any] = {"attachment": attachment.name, "mail": mail.link}
                extra["thread"] = mail.extra["thread"]
                yield mail.model_copy(
                    update={
                        "id": stable_id("email", mail.id, "attachment", index, attachment.name, number),
                        "text": passage,
                        "link": f"{mail.link}#{attachment.name}#passage-{number}",
                        "page": page,
                        "quoted": None,
                        "signature": None,
                        "extra": extra,
                    }
                )


def _parse(data: bytes, fallback_time: datetime | None) -> tuple[EmailMessage, datetime] | str:
    """The mail and its time, or why it cannot be imported."""
    msg = _PARSER.parsebytes(data)
    if not {key.lower() for key in msg.keys()}.intersection(_MAIL_HEADERS):
        return "not a mail: none of From, Date, Subject, Message-ID, To at its start"
    time = _mail_time(msg) or fallback_time
    if time is None:
        return "no readable date (neither a Date header nor one from the archive)"
    return msg, time


def _mail_time(msg: Message) -> datetime | None:
    try:
        value = getattr(msg.get("Date"), "datetime", None)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if not isinstance(value, datetime):
        return None
    # "-0000" and zone-less dates parse naive: the sender's local time, stored as UTC.
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _from_line_time(line: str) -> datetime | None:
    """The delivery time on an mbox "From sender Sat Dec 30 21:05:09 2023" line (UTC by convention)."""
    match = _FROM_LINE_DATE.search(line)
    if not match:
        return None
    try:
        stamp = datetime.strptime(" ".join(match.groups()), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None
    return stamp.replace(tzinfo=UTC)


class MboxImporter:
    kind = "mbox"
    chat = False
    detect_order = 50
    summary = "Import mails from an mbox file."
    path_help = "An mbox file"
    options: Mapping[str, str] = {}

    def __init__(self, path: Path, person: str, limits: ImportSettings | None = None) -> None:
        # Apple Mail exports "Name.mbox" folders with the messages in a file called "mbox".
        self.file = path / "mbox" if path.is_dir() else path
        self.person = person
        self.source = f"mbox:{path.name}"
        self.name = path.name
        self.limits = import_limits(limits)

    def check(self) -> None:
        if not self.file.is_file():
            raise WrongKind(f"{self.file} is not an mbox file")
        with self.file.open("rb") as handle:
            head = handle.read(MBOX_HEAD_BYTES).lstrip(b"\r\n")
        if not head.startswith(b"From "):
            raise WrongKind(f"{self.name} is not an mbox file: it does not start with a 'From ' line")

    def items(self) -> Iterator[HistoryRecord | Problem]:
        self.check()
        yield from guarded(self._items(), self.name)

    def _items(self) -> Iterator[HistoryRecord | Problem]:
        mails = _Mails(self.person, self.source, self.limits)
        limit = self.limits.max_mail_bytes
        box = mailbox.mbox(self.file, create=False)
        try:
            for number, key in enumerate(box.iterkeys(), start=1):
                where = f"{self.name} message {number}"
                raw = _mbox_mail(box, key, limit)
                if isinstance(raw, int):
                    yield Problem(
                        where, f"not read: {raw:,} bytes (at most {limit:,}: CONFIDE_IMPORTS__MAX_MAIL_BYTES)"
                    )
                    continue
                from_line, _, data = raw.partition(b"\n")
                data = _FROM_ESCAPE.sub(rb"\1", data)
                fallback = _from_line_time(from_line.decode("ascii", errors="replace"))
                yield from mails.records(data, where, fallback, {})
        finally:
            box.close()


def _mbox_mail(box: mailbox.mbox, key: str, limit: int) -> bytes | int:
    """One mail of an mbox with its "From " line, as `get_bytes` gives it; its size instead when over `limit`."""
    handle = box.get_file(key, from_=True)  # a window on the mbox file: it is never read whole
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    if size > limit:
        return size
    handle.seek(0)
    return handle.read(size).replace(os.linesep.encode(), b"\n")


class MaildirImporter:
    kind = "maildir"
    chat = False
    detect_order = 40
    summary = "Import mails from a Maildir."
    path_help = "A Maildir folder"
    options: Mapping[str, str] = {}

    def __init__(self, path: Path, person: str, limits: ImportSettings | None = None) -> None:
        self.path = path
        self.person = person
        self.source = f"maildir:{path.name}"
        self.limits = import_limits(limits)

    def check(self) -> None:
        if not self.path.is_dir():
            raise WrongKind(f"{self.path} is not a Maildir: a Maildir is a folder with cur/ and new/ in it")
        if not self._folders():
            raise WrongKind(f"{self.path} is not a Maildir: no folder under it has cur/ and new/")

    def _folders(self) -> list[tuple[str, Path]]:
        """Every maildir at or under the path (Maildir++ ".Sent", or one folder per mailbox), in name order."""
        found: list[tuple[str, Path]] = []
        for top, dirs, _ in os.walk(self.path):
            folder = Path(top)
            dirs.sort()
            if _is_maildir(folder):
                dirs[:] = [d for d in dirs if d not in {"cur", "new", "tmp"}]
                relative = folder.relative_to(self.path).as_posix()
                found.append(("INBOX" if relative == "." else relative.lstrip("."), folder))
        return found

    def items(self) -> Iterator[HistoryRecord | Problem]:
        self.check()
        yield from guarded(self._items(), self.path.name)

    def _items(self) -> Iterator[HistoryRecord | Problem]:
        mails = _Mails(self.person, self.source, self.limits)
        for label, folder in self._folders():
            # Delivery names start with the arrival time, so name order is arrival order.
            files = sorted(
                (f for sub in ("cur", "new") for f in (folder / sub).iterdir() if f.is_file() and f.name[0] != "."),
                key=lambda f: (f.name, f.parent.name),
            )
            for file in files:
                where = file.relative_to(self.path).as_posix()
                try:
                    data = _read_mail(file, self.limits.max_mail_bytes)
                except OSError as exc:
                    yield Problem(where, f"cannot read: {exc}")
                    continue
                if isinstance(data, int):
                    limit = self.limits.max_mail_bytes
                    yield Problem(
                        where, f"not read: {data:,} bytes (at most {limit:,}: CONFIDE_IMPORTS__MAX_MAIL_BYTES)"
                    )
                    continue
                yield from mails.records(data, where, _delivery_time(file.name), {"folder": label})


def _read_mail(file: Path, limit: int) -> bytes | int:
    """A mail file's bytes; its size instead when over `limit` (read bounded: it may grow meanwhile)."""
    if (size := file.stat().st_size) > limit:
        return size
    with file.open("rb") as handle:
        data = handle.read(limit + 1)
    return data if len(data) <= limit else max(len(data), file.stat().st_size)


def _is_maildir(folder: Path) -> bool:
    return (folder / "cur").is_dir() and (folder / "new").is_dir()


def _delivery_time(name: str) -> datetime | None:
    stamp = name.split(".", 1)[0]
    if not stamp.isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(stamp), UTC)
    except (ValueError, OverflowError, OSError):  # a name of 30 digits: beyond any date (OSError: EOVERFLOW)
        return None
