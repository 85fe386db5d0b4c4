"""Importers bend, never break: generated and mutated exports of every format, and one regression per crash
class a security review found (deep JSON, huge numbers, fields of the wrong type, encrypted or exotic zips,
truncated zips, zip and .docx bombs, a 5 MB message, lone surrogates).

Whatever the file, `check()` either refuses it (`WrongKind`) or `items()` yields records and `Problem`s to the
end: no exception escapes, and no record's text is over the bound. The bounds are set small here so that small
generated files reach them; benchmarks/fuzz.py runs thousands of cases against the defaults.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import ImportSettings
from bridge.history.importers.archive import Capped, TooBig, check_archive, open_member, read_member
from bridge.history.importers.base import Problem, WrongKind, guarded
from bridge.history.importers.registry import detect_kind, open_importer
from bridge.history.importers.text import PASSAGE_CHARS, extract_text, passages
from bridge.history.index import HistoryIndex
from bridge.history.ingest import ingest
from bridge.messages import HistoryRecord
from tests.import_fixtures import (
    ANDROID_US,
    HTML_PAGE,
    IOS_DE,
    docx_bytes,
    mail,
    mail_with_attachments,
    telegram_account,
    telegram_chat,
    tiny_pdf,
    write_json,
    write_maildir,
    write_mbox,
    write_whatsapp_txt,
    write_whatsapp_zip,
)

# Small bounds, so that a generated file of kilobytes reaches them.
SMALL = ImportSettings(
    max_file_bytes=2_000_000,
    max_mail_bytes=300_000,
    max_member_bytes=300_000,
    max_archive_bytes=600_000,
    max_compression_ratio=50,
    max_json_depth=32,
    max_message_chars=5_000,
    max_text_chars=50_000,
    max_mime_parts=50,
    max_attachment_bytes=200_000,
    max_pdf_pages=20,
    max_document_seconds=5.0,
)
FUZZ = settings(
    max_examples=int(os.environ.get("CONFIDE_FUZZ_EXAMPLES", "60")),  # more for a deeper run
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def drain(kind: str, path: Path, bounds: ImportSettings = SMALL) -> list[HistoryRecord | Problem]:
    """Everything the importer yields, as `confide import` reads it; [] when `check()` refuses the file."""
    importer = open_importer(kind, path, "me", limits=bounds)
    try:
        importer.check()
    except WrongKind:
        return []
    items = list(importer.items())
    for item in items:
        assert isinstance(item, HistoryRecord | Problem), item
        if isinstance(item, HistoryRecord):
            assert len(item.text) <= max(bounds.max_message_chars, 2 * PASSAGE_CHARS)
    return items


def split(items: list[HistoryRecord | Problem]) -> tuple[list[HistoryRecord], list[Problem]]:
    return [i for i in items if isinstance(i, HistoryRecord)], [i for i in items if isinstance(i, Problem)]


# -- mutations ------------------------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few bit flips, a cut, a duplicated slice or random bytes put in."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        kind = draw(st.sampled_from(["flip", "truncate", "duplicate", "insert", "zero"]))
        at = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del out[at:]
        elif kind == "duplicate":
            end = draw(st.integers(at, min(len(out), at + 4096)))
            out[at:at] = out[at:end] * draw(st.integers(1, 8))
        elif kind == "insert":
            out[at:at] = draw(st.binary(max_size=64))
        else:
            out[at : at + draw(st.integers(1, 64))] = b"\x00" * 8
    return bytes(out)


def rezip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


# -- WhatsApp -------------------------------------------------------------------------------------------------

_dates = st.datetimes(min_value=datetime(1999, 1, 1), max_value=datetime(2040, 1, 1))
_names = st.sampled_from(["Anna", "Ben", "\u202a+1 555 0100\u202c", "Familie", "A: B", ""])
_texts = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["<Media omitted>", "image omitted", "This message was deleted", "x <This message was edited>"]),
    st.builds(lambda n: "• " * n + "document omitted", st.integers(0, 3000)),
    st.builds(lambda n: " " * n + "<This message was edited>", st.integers(0, 3000)),
)


@st.composite
def whatsapp_lines(draw: st.DrawFn) -> list[str]:
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 25))):
        when = draw(_dates)
        layout = draw(st.sampled_from(["android", "ios", "us", "junk", "raw"]))
        author, text = draw(_names), draw(_texts)
        if layout == "android":
            lines.append(f"{when:%d/%m/%Y, %H:%M} - {author}: {text}")
        elif layout == "ios":
            lines.append(f"[{when:%d.%m.%y, %H:%M:%S}] {author}: {text}")
        elif layout == "us":
            lines.append(f"{when:%m/%d/%y, %I:%M}\u202f{when:%p} - {author}: {text}")
        elif layout == "junk":
            day, month, year = draw(st.integers(0, 99)), draw(st.integers(0, 99)), draw(st.integers(0, 99999))
            lines.append(f"{day}/{month}/{year}, 99:99 - x")
        else:
            lines.append(text)
    return lines


@FUZZ
@given(lines=whatsapp_lines(), chaos=st.data())
def test_whatsapp_txt_never_breaks(lines: list[str], chaos: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as name:
        path = write_whatsapp_txt(Path(name), lines + ANDROID_US[:6])
        if chaos.draw(st.booleans()):
            path.write_bytes(chaos.draw(mutated(path.read_bytes())))
        drain("whatsapp", path)


@FUZZ
@given(lines=whatsapp_lines(), chaos=st.data())
def test_whatsapp_zip_never_breaks(lines: list[str], chaos: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as name:
        path = write_whatsapp_zip(Path(name), IOS_DE + lines)
        method = chaos.draw(st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED, zipfile.ZIP_BZIP2]))
        if method != zipfile.ZIP_DEFLATED:
            path.write_bytes(rezip({"_chat.txt": "\n".join(IOS_DE + lines).encode()}, method))
        if chaos.draw(st.booleans()):
            path.write_bytes(chaos.draw(mutated(path.read_bytes())))
        drain("whatsapp", path)


# -- Telegram -------------------------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_message_fields = st.fixed_dictionaries(
    {},
    optional={
        "id": _json_values,
        "type": st.sampled_from(["message", "service"]) | _json_values,
        "date": st.sampled_from(["2023-12-31T22:05:09", "not a date"]) | _json_values,
        "date_unixtime": st.sampled_from(["1704056709", "9" * 30, "-1"]) | _json_values,
        "from": _json_values,
        "text": _json_values,
        "poll": _json_values,
        "file": _json_values,
        "photo": _json_values,
        "reply_to_message_id": _json_values,
        "forwarded_from": _json_values,
        "sticker_emoji": _json_values,
    },
)


@FUZZ
@given(messages=st.lists(_message_fields | _json_values, max_size=8), chaos=st.data())
def test_telegram_never_breaks(messages: list[Any], chaos: st.DataObject) -> None:
    export: Any = telegram_account() if chaos.draw(st.booleans()) else telegram_chat()
    target = export["chats"]["list"][0] if "chats" in export else export
    target["messages"] = target["messages"] + messages
    if chaos.draw(st.booleans()):
        depth = chaos.draw(st.integers(1, 200))
        target["messages"].append({"id": 99, "type": "message", "text": json.loads("[" * depth + "]" * depth)})
    with tempfile.TemporaryDirectory() as name:
        path = write_json(Path(name) / "result.json", export)
        if chaos.draw(st.booleans()):
            path.write_bytes(chaos.draw(mutated(path.read_bytes())))
        drain("telegram", path)


# -- mail -----------------------------------------------------------------------------------------------------


@st.composite
def raw_mails(draw: st.DrawFn) -> bytes:
    headers = [
        f"{draw(st.sampled_from(['From', 'Date', 'Subject', 'Message-ID', 'Content-Type', 'X-Junk']))}: "
        f"{draw(st.text(max_size=60)).replace(chr(10), ' ')}"
        for _ in range(draw(st.integers(0, 6)))
    ]
    body = draw(st.binary(max_size=300))
    return "\n".join(headers).encode("utf-8", "surrogateescape") + b"\n\n" + body


@FUZZ
@given(mails=st.lists(raw_mails(), max_size=5), chaos=st.data())
def test_mbox_never_breaks(mails: list[bytes], chaos: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as name:
        path = write_mbox(Path(name) / "a.mbox", [mail_with_attachments(tiny_pdf(["Ferry"])), *mails])
        if chaos.draw(st.booleans()):
            path.write_bytes(b"From x Sat Dec 30 21:05:09 2023\n" + chaos.draw(mutated(path.read_bytes())))
        drain("mbox", path)


@FUZZ
@given(mails=st.lists(raw_mails(), max_size=4), names=st.lists(st.text("0123456789.,:x", max_size=40), max_size=4))
def test_maildir_never_breaks(mails: list[bytes], names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as name:
        files: dict[str, bytes | EmailMessage] = {"cur/1704056709.1.host": mail("Hello", "Hi there")}
        for index, (data, file_name) in enumerate(zip(mails, names, strict=False)):
            files[f"{'new' if index % 2 else 'cur'}/{file_name.strip('.') or index}"] = data
        root = write_maildir(Path(name) / "Mail", files)
        drain("maildir", root)


# -- documents ------------------------------------------------------------------------------------------------


@cache
def _docx() -> bytes:
    return docx_bytes()


@cache
def _pdf() -> bytes:
    return tiny_pdf(["Ferry to Lisbon", "Seat 12A, deck 3"])


@FUZZ
@given(
    suffix=st.sampled_from([".txt", ".md", ".html", ".docx", ".pdf"]),
    text=st.text(max_size=500),
    chaos=st.data(),
)
def test_documents_never_break(suffix: str, text: str, chaos: st.DataObject) -> None:
    base = {
        ".txt": text.encode("utf-8", "surrogatepass"),
        ".md": f"# {text}\n\n{text}".encode("utf-8", "surrogatepass"),
        ".html": HTML_PAGE + text.encode("utf-8", "surrogatepass"),
        ".docx": _docx(),
        ".pdf": _pdf(),
    }[suffix]
    data = chaos.draw(mutated(base)) if chaos.draw(st.booleans()) else base
    if suffix == ".docx" and chaos.draw(st.booleans()):  # a valid zip around mutated XML: python-docx parses it
        with zipfile.ZipFile(io.BytesIO(base)) as archive:
            members = {info.filename: archive.read(info) for info in archive.infolist()}
        members["word/document.xml"] = chaos.draw(mutated(members["word/document.xml"]))
        data = rezip(members)
    with tempfile.TemporaryDirectory() as name:
        path = Path(name) / f"doc{suffix}"
        path.write_bytes(data)
        drain("files", path)


@FUZZ
@given(data=st.binary(max_size=2000))
def test_any_bytes_are_sniffed_without_breaking(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as name:
        for file_name in ("chat.txt", "chat.zip", "result.json", "a.mbox", "doc.docx"):
            path = Path(name) / file_name
            path.write_bytes(data)
            kind = detect_kind(path)
            if kind is not None:
                drain(kind, path)


# -- regressions: Telegram ------------------------------------------------------------------------------------


def telegram_with(tmp_path: Path, *messages: Any) -> Path:
    chat = telegram_chat()
    chat["messages"] = [*messages, chat["messages"][1]]  # the last one is valid: it must still import
    return write_json(tmp_path / "result.json", chat)


def test_deep_json_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text('{"messages": [{"id": 1, "text": ' + "[" * 100_000 + "]" * 100_000 + "}]}")
    records, problems = split(drain("telegram", path, ImportSettings()))
    assert records == [] and "nested 100003 deep" in problems[0].why
    # Deeper than the bound, though within what Python could parse: refused all the same.
    path.write_text('{"messages": [{"id": 1, "text": ' + "[" * 100 + "]" * 100 + "}]}")
    assert "CONFIDE_IMPORTS__MAX_JSON_DEPTH" in split(drain("telegram", path, ImportSettings()))[1][0].why


def test_a_5000_digit_integer_is_kept_as_text(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    message = {**telegram_chat()["messages"][1], "id": "@ID@", "views": "@N@"}
    text = json.dumps({"name": "Anna", "type": "personal_chat", "id": 4242, "messages": [message]})
    path.write_text(text.replace('"@ID@"', "7" * 5000).replace('"@N@"', "9" * 5000))
    records, problems = split(drain("telegram", path, ImportSettings()))
    assert problems == [] and records[0].text == "The cabin door code is 4711"
    assert len(records[0].extra["message_id"]) == 1000  # kept short in the index: no 5000-digit payload
    dated = text.replace('"@ID@"', "2").replace(json.dumps(message["date_unixtime"]), "8" * 5000)
    path.write_text(dated)
    records, problems = split(drain("telegram", path, ImportSettings()))
    assert records == [] and "unreadable message" in problems[0].why


def test_fields_of_the_wrong_type_are_problems(tmp_path: Path) -> None:
    path = telegram_with(tmp_path, 5, "text", None, [1], {"id": {"a": 1}, "type": "message", "text": 5})
    records, problems = split(drain("telegram", path, ImportSettings()))
    assert [r.text for r in records] == ["The cabin door code is 4711"]
    assert len(problems) == 5
    # "chats" whose "list" is not a list (the TypeError the review found around export.py line 113).
    account = telegram_account()
    account["chats"]["list"] = 7
    records, problems = split(drain("telegram", write_json(path, account), ImportSettings()))
    assert "Old neighbours" in {r.conversation for r in records} and "not an object" in problems[0].why


def test_a_date_beyond_any_calendar_is_a_problem(tmp_path: Path) -> None:
    far = {"id": 3, "type": "message", "date_unixtime": "99999999999999", "from": "Anna", "text": "x"}
    huge = {"id": 4, "type": "message", "date_unixtime": 1e308, "from": "Anna", "text": "y"}
    records, problems = split(drain("telegram", telegram_with(tmp_path, far, huge), ImportSettings()))
    assert len(records) == 1 and len(problems) == 2  # OSError EOVERFLOW / OverflowError, each a problem


# -- regressions: zips ----------------------------------------------------------------------------------------


def _patch_zip(
    data: bytes, member: str, *, flags: int | None = None, method: int | None = None, size: int | None = None
) -> bytes:
    """A zip with a member's flag bits, compression method or sizes (both) changed in both its headers."""
    out = bytearray(data)
    # Where the flags, the name's length and the name are in a local header, and in a central one.
    for signature, offset, length_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        start = 0
        while (start := out.find(signature, start)) >= 0:
            length = struct.unpack_from("<H", out, start + length_at)[0]
            if out[start + name_at : start + name_at + length] == member.encode():
                for value, at, layout in ((flags, 0, "<H"), (method, 2, "<H"), (size, 12, "<I"), (size, 16, "<I")):
                    if value is not None:
                        struct.pack_into(layout, out, start + offset + at, value)
            start += 4
    return bytes(out)


def test_an_encrypted_chat_is_a_problem(tmp_path: Path) -> None:
    path = write_whatsapp_zip(tmp_path, IOS_DE)
    path.write_bytes(_patch_zip(path.read_bytes(), "_chat.txt", flags=0x1))
    with zipfile.ZipFile(path) as archive, pytest.raises(RuntimeError):
        archive.open("_chat.txt")  # what the stdlib raised into the import
    records, problems = split(drain("whatsapp", path, ImportSettings()))
    assert records == [] and "encrypted" in problems[-1].why
    assert detect_kind(path) == "whatsapp"  # a chat sent in chat gets the same answer


@pytest.mark.parametrize("method", [99, 9, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_compression_method_not_read_is_a_problem(tmp_path: Path, method: int) -> None:
    path = write_whatsapp_zip(tmp_path, IOS_DE)
    if method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):  # real ones: they inflate without a bound on the output
        path.write_bytes(rezip({"_chat.txt": "\n".join(IOS_DE).encode()}, method))
    else:  # AES (99) and deflate64 (9): the stdlib raised NotImplementedError
        path.write_bytes(_patch_zip(path.read_bytes(), "_chat.txt", method=method))
    records, problems = split(drain("whatsapp", path, ImportSettings()))
    assert records == [] and f"method {method}" in problems[-1].why


def test_a_truncated_or_corrupt_zip_is_a_problem(tmp_path: Path) -> None:
    lines = [f"[01.01.24, 10:{m:02d}:00] Anna: message number {m} " + "padding " * 40 for m in range(60)]
    path = write_whatsapp_zip(tmp_path, lines)
    data = path.read_bytes()
    for cut in range(0, len(data), 97):  # cut anywhere: refused, or read up to the damage
        path.write_bytes(data[:cut])
        drain("whatsapp", path, ImportSettings())
    # The central directory intact but the compressed text damaged: the messages before it stay.
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo("_chat.txt")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    middle = start + info.compress_size // 2
    path.write_bytes(data[:middle] + bytes(b ^ 0x55 for b in data[middle : middle + 200]) + data[middle + 200 :])
    records, problems = split(drain("whatsapp", path, ImportSettings()))
    assert records and records[0].text.startswith("message number 0")  # what came before the damage stays
    assert "the rest cannot be read" in problems[-1].why
    # A stored member whose sizes claim more than the file holds: it ends early (the EOFError the stdlib raised).
    stored = rezip({"_chat.txt": "\n".join(lines).encode()}, zipfile.ZIP_STORED)
    with zipfile.ZipFile(io.BytesIO(stored)) as archive:
        claimed = archive.getinfo("_chat.txt").file_size + 100_000
    path.write_bytes(_patch_zip(stored, "_chat.txt", size=claimed))
    with zipfile.ZipFile(path) as archive, pytest.raises(EOFError):
        archive.read("_chat.txt")
    records, problems = split(drain("whatsapp", path, ImportSettings()))
    assert len(records) > 30 and "EOFError" in problems[-1].why  # up to the last whole piece read


def test_a_zip_bomb_stops_at_the_bound(tmp_path: Path) -> None:
    bound = 1 << 20
    header = "[01.01.24, 10:00:00] Anna: the start\n"
    bomb = rezip({"_chat.txt": header.encode() + b"\n" * (50 << 20)})  # 50 MB of line ends in 50 KB
    assert len(bomb) < 100_000
    path = tmp_path / "WhatsApp Chat - Bomb.zip"
    path.write_bytes(bomb)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("_chat.txt")
        with pytest.raises(TooBig):
            open_member(archive, info, bound)  # its header says 50 MB: refused unread
        stream = Capped(archive.open(info), bound)  # how the chat text is read: up to the bound
        assert sum(len(chunk) for chunk in iter(lambda: stream.read(65536), b"")) == bound  # bytes actually read
        assert stream.cut
        info.file_size = 100  # a header that lies: reading still ends, at the bound or on the CRC
        with pytest.raises((TooBig, zipfile.BadZipFile)):
            read_member(archive, info, 1000)
    capped = Capped(io.BytesIO(b"x" * 5_000_000), bound)  # whatever the source says, the count decides
    assert len(capped.read()) == bound and capped.cut
    started = time.monotonic()
    records, problems = split(drain("whatsapp", path, ImportSettings(max_member_bytes=bound)))
    assert [r.text for r in records] == ["the start"]
    assert "CONFIDE_IMPORTS__MAX_MEMBER_BYTES" in problems[-1].why
    assert time.monotonic() - started < 10


def test_a_bomb_of_messages_stops_at_its_compression_ratio(tmp_path: Path) -> None:
    # 6 MB of identical messages (200,000 records to build) from 25 KB: stopped once it inflates 100 times over.
    path = tmp_path / "WhatsApp Chat - Bomb.zip"
    path.write_bytes(rezip({"_chat.txt": b"13/01/2024, 10:00 - Anna: hi\n" * 200_000}))
    started = time.monotonic()
    records, problems = split(drain("whatsapp", path, ImportSettings()))
    assert "CONFIDE_IMPORTS__MAX_COMPRESSION_RATIO" in problems[-1].why
    assert len(records) < 50_000 and time.monotonic() - started < 10  # stopped after its first MiB


def test_a_docx_bomb_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(_docx())) as source:
        members = {i.filename: source.read(i) for i in source.infolist()}
    xml = members["word/document.xml"]
    at = xml.index(b"<w:body>") + len(b"<w:body>")
    members["word/document.xml"] = xml[:at] + b"<w:p><w:r><w:t>x</w:t></w:r></w:p>" * 300_000 + xml[at:]  # 10 MB
    path = tmp_path / "bomb.docx"
    path.write_bytes(rezip(members))
    assert path.stat().st_size < 100_000
    bounds = ImportSettings(max_member_bytes=4 << 20, max_archive_bytes=8 << 20)
    with pytest.raises(TooBig):
        check_archive(path.read_bytes(), bounds.max_member_bytes, bounds.max_archive_bytes, 1000)
    with pytest.raises(TooBig, match="MAX_COMPRESSION_RATIO"):  # 10 MB from 30 KB: a bomb by its ratio alone
        check_archive(path.read_bytes(), 1 << 30, 1 << 30, 100)
    started = time.monotonic()
    records, problems = split(drain("files", path, bounds))
    assert records == [] and "unpacks to" in problems[0].why
    assert time.monotonic() - started < 5  # python-docx took 20 s for it


# -- regressions: giant texts and odd characters --------------------------------------------------------------


class _Stored:
    """A history that keeps what would be embedded, without embedding it."""

    def __init__(self) -> None:
        self.records: list[HistoryRecord] = []

    async def existing(self, person: str, record_ids: Sequence[str]) -> set[str]:
        return set()

    async def add(self, person: str, records: Sequence[HistoryRecord]) -> int:
        self.records += records
        return len(records)


async def test_a_5_mb_whatsapp_message_imports_as_passages(tmp_path: Path) -> None:
    words = " ".join(f"word{n}" for n in range(700_000))  # 5.3 MB on one line
    path = write_whatsapp_txt(tmp_path, ["13/01/2024, 10:00 - Anna: " + words, "13/01/2024, 10:01 - Ben: ok"])
    items = drain("whatsapp", path, ImportSettings())
    records, problems = split(items)
    assert [r.author for r in records] == ["Anna", "Ben"] and 990_000 < len(records[0].text) <= 1_000_000
    assert "CONFIDE_IMPORTS__MAX_MESSAGE_CHARS" in problems[0].why and problems[0].where.endswith(":1")
    stored = _Stored()
    summary = await ingest(stored, "me", iter(items))
    assert summary.problems == 1 and summary.imported == len(stored.records) > 800
    pieces = [r for r in stored.records if r.author == "Anna"]
    assert all(len(r.text) <= PASSAGE_CHARS for r in pieces)  # never embedded whole
    assert pieces[0].id == records[0].id and pieces[1].id == f"{records[0].id}#2"
    assert " ".join(r.text for r in pieces).split() == records[0].text.split()
    assert pieces[5].neighbours.before[-1].startswith("Anna: word")  # passages are each other's context


async def test_a_lone_surrogate_is_cleaned_before_embedding(tmp_path: Path, history: HistoryIndex) -> None:
    chat = telegram_chat()
    chat["messages"] = [{**chat["messages"][1], "text": "door code \ud800 4711", "from": "Anna \udcc3"}]
    path = tmp_path / "result.json"
    path.write_text(json.dumps(chat))  # escaped as "\\ud800", as a broken exporter would write it
    items = drain("telegram", path, ImportSettings())
    assert split(items)[0][0].text == "door code \ud800 4711"  # as the export wrote it
    summary = await ingest(history, "me", iter(items))
    assert summary.imported == 1
    hits = await history.search("me", "door code", limit=1)
    assert hits[0].record.text == "door code \ufffd 4711" and hits[0].record.author == "Anna \ufffd"
    pair = "\ud83d\ude00"  # a pair written as two escapes is the character it stands for
    assert (await history.embedder.embed_documents([f"smile {pair}"]))[0] == (
        await history.embedder.embed_documents(["smile \U0001f600"])
    )[0]


def test_text_cut_at_the_bounds_is_reported(tmp_path: Path) -> None:
    (tmp_path / "long.txt").write_text("word " * 30_000)
    (tmp_path / "pages.pdf").write_bytes(tiny_pdf([f"page {n}" for n in range(30)]))
    html = "<p>paragraph of an enormous page</p>\n" * 30_000  # 1.1 MB: fed to html2text in pieces
    (tmp_path / "big.html").write_text(html)
    records, problems = split(drain("files", tmp_path))
    assert {p.where for p in problems} == {"long.txt", "pages.pdf", "big.html"}
    assert any("MAX_PDF_PAGES" in p.why for p in problems) and any("MAX_TEXT_CHARS" in p.why for p in problems)
    assert max(r.page or 0 for r in records) == SMALL.max_pdf_pages
    sections = extract_text("big.html", html.encode(), ImportSettings(max_document_seconds=0.001)).cut
    assert "MAX_DOCUMENT_SECONDS" in sections[0]


def test_mails_over_the_bounds_are_problems_and_the_rest_imports(tmp_path: Path) -> None:
    many_parts = mail("Parts", "body")
    for n in range(120):
        many_parts.add_attachment(b"x", "application", "octet-stream", filename=f"{n}.bin")
    big_attachment = mail("Big", "see attached", message_id="<big@example.com>")
    big_attachment.add_attachment(b"word " * 50_000, "text", "plain", filename="big.txt")
    huge = mail("Huge", "x" * 700_000, message_id="<huge@example.com>")
    long_body = mail("Long", "word " * 2_000, message_id="<long@example.com>")
    fine = mail("Fine", "the ferry leaves at 7:40", message_id="<fine@example.com>")
    path = write_mbox(tmp_path / "a.mbox", [many_parts, big_attachment, huge, long_body, fine])
    records, problems = split(drain("mbox", path, SMALL.model_copy(update={"max_mail_bytes": 600_000})))
    assert [r.conversation for r in records] == ["Big", "Long", "Fine"]
    assert [p.where for p in problems] == [
        "a.mbox message 1",
        "a.mbox message 2 attachment 'big.txt'",
        "a.mbox message 3",
        "a.mbox message 4",
    ]
    assert "MIME parts" in problems[0].why and "MAX_ATTACHMENT_BYTES" in problems[1].why
    assert "MAX_MAIL_BYTES" in problems[2].why and "MAX_MESSAGE_CHARS" in problems[3].why
    root = write_maildir(tmp_path / "Mail", {"cur/999999999999999999999.host": fine.as_bytes()})
    assert [r.time.year for r in split(drain("maildir", root))[0]] == [2023]  # the Date header, not the name


def test_an_unexpected_error_ends_the_file_with_one_problem(caplog: pytest.LogCaptureFixture) -> None:
    record = HistoryRecord(
        id="x",
        person="me",
        channel="files",
        conversation="c",
        author="",
        time=datetime.now(UTC),
        text="kept",
        source="s",
    )

    def broken() -> Iterator[HistoryRecord | Problem]:
        yield record
        raise ZeroDivisionError("a bug")

    with caplog.at_level(logging.ERROR):
        items = list(guarded(broken(), "notes.txt"))
    assert items[0] is record and items[1] == Problem("notes.txt", "reading stopped: ZeroDivisionError: a bug")
    assert "ZeroDivisionError" in caplog.text  # logged with its traceback, not swallowed

    def refused() -> Iterator[HistoryRecord | Problem]:
        raise WrongKind("not this kind")
        yield record

    with pytest.raises(WrongKind):
        list(guarded(refused(), "x"))


def test_passages_of_a_text_without_spaces_are_cut_in_linear_time() -> None:
    text = "x" * 5_000_000
    started = time.monotonic()
    pieces = list(passages(text))
    assert time.monotonic() - started < 2
    assert "".join(pieces) == text and max(map(len, pieces)) <= PASSAGE_CHARS


def test_a_big_page_is_decoded_from_its_start() -> None:
    # Over a MiB, the encoding is told from the page's start: charset detection over all of it took 100s of MB.
    words = "plain words " * 100_000  # one long paragraph: html2text reads it fast
    utf8 = f"<html><body><p>{words}</p><p>Café crème</p></body></html>"
    assert "Café crème" in extract_text("a.html", utf8.encode()).sections[0][1]
    declared = f'<html><head><meta charset="windows-1252"></head><body><p>{words}</p><p>Grüße</p>'
    assert "Grüße" in extract_text("b.html", declared.encode("cp1252")).sections[0][1]
    broken = declared.encode("cp1252").replace(b"plain", b"\x81", 1)  # a byte cp1252 lacks
    assert "Gr" in extract_text("c.html", broken).sections[0][1]
