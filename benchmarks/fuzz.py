"""Fuzzing the importers: generated and mutated exports of every format, each read as `confide import` reads it.

    .venv/bin/python benchmarks/fuzz.py [--cases 10000] [--seed 1] [--timeout 30] [--batch 40]

Each case writes a file (or a Maildir) from its own seed: WhatsApp .txt and .zip (stored, deflate, bzip2, LZMA,
encrypted or exotic methods, truncated, bit-flipped, zip bombs of line ends, of text without line ends and of
identical messages, 5 MB single messages), Telegram result.json (fields of any type, 5000-digit numbers, nesting
a hundred thousand deep, lone surrogates), mbox and Maildir (broken headers and encodings, thousands of MIME
parts, .docx and PDF attachment bombs, odd file names) and documents (.txt, .md, .html, .docx, .pdf: valid,
mutated, bombs, thousands of pages). The importer is opened as `confide import` opens it
(bridge.history.importers.registry), `check()` may refuse the file (WrongKind: an answer, not a failure), and every item
of `items()` goes through bridge.history.ingest.ingest with a history that embeds nothing: cleaning, passage splitting
and context windows run, embedding and indexing (too slow for thousands of cases) do not. Every 1000th case
(case 0 included) instead imports a 5 MB WhatsApp message through the real embedder and an embedded Qdrant
shard, with CONFIDE_IMPORTS__MAX_MESSAGE_CHARS at 100,000 so that it fits the time limit: the passages, not the
giant text, reach the encoder, and the peak RSS shows it.

Cases run in batches in child processes, one at a time (the machine has 2 cores). A case that raises is a
traceback (a child that dies counts as one too); a case without a result after --timeout seconds is a hang: the
child is killed and the batch goes on in a fresh one. Each case's file is written by a process forked for it, so
that the child's own peak RSS (getrusage RUSAGE_SELF, reported after each case; /proc VmHWM for a child killed
on a hang; wait4's ru_maxrss for one that died) is the importer's alone; the peak is the largest over the
batches, and each case reports how far it raised its child's. No file from tests/ is used: the generators are
this file's own. The last line is

    fuzz: N cases, T tracebacks, H hangs, peak RSS M MB

Goal: 0 tracebacks, 0 hangs, peak RSS under 500 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import select
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = (
    "boat cabin key pier invoice plumber boiler birthday garden insurance school doctor appointment train ticket "
    "hotel beach weekend meeting project deadline report budget bakery holiday photo concert ferry"
).split()
ODD = ["\u200e", "\u200f", "\u202a", "\ufeff", "\u2028", "\x00", "\x1b", "é", "ß", "漢字", "🙂", "\r", "\t", "•"]
INGEST_EVERY = 1000
INGEST_MESSAGE_CHARS = 100_000
GIANT_BYTES = 5 * 1024 * 1024
MiB = 1024 * 1024

# -- bytes and text ---------------------------------------------------------------------------------------------


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


def odd_text(rng: random.Random, size: int) -> str:
    """Words mixed with bidi marks, controls, emoji, other scripts and the odd very long token."""
    parts = [rng.choice(WORDS) if rng.random() < 0.7 else rng.choice(ODD) for _ in range(size)]
    if rng.random() < 0.1:
        parts.append("x" * rng.randint(1000, 20_000))
    return " ".join(parts)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A few bit flips, cuts, duplicated slices, inserted or zeroed bytes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        if not out:
            break
        at = rng.randrange(len(out))
        kind = rng.choice(["flip", "flip", "truncate", "duplicate", "insert", "zero"])
        if kind == "flip":
            out[at] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del out[at:]
        elif kind == "duplicate":
            out[at:at] = out[at : at + rng.randint(1, 4096)] * rng.randint(1, 16)
        elif kind == "insert":
            out[at:at] = rng.randbytes(rng.randint(1, 64))
        else:
            out[at : at + rng.randint(1, 256)] = bytes(rng.randint(1, 256))
    return bytes(out)


# -- zips, written by hand: members whose headers lie, flags and methods the stdlib cannot write ---------------


@dataclass
class Member:
    name: str
    data: bytes = b""  # what it holds (after `prefix`), compressed below
    method: int = 8  # 0 stored, 8 deflate, 12 bzip2, 14 LZMA, anything else
    flags: int = 0
    repeat: int = 1  # `data` that many times over (a bomb, without holding it whole)
    stated_size: int | None = None  # the size its headers claim, when they lie
    prefix: bytes = b""


def zip_bytes(members: list[Member]) -> bytes:
    out = bytearray()
    central = bytearray()
    for member in members:
        compressed, crc, size = _compress(member)
        stated = size if member.stated_size is None else member.stated_size
        name = member.name.encode()
        header = struct.pack(
            "<HHHHHIIIHH", 20, member.flags, member.method, 0, 0x21, crc, len(compressed), stated, len(name), 0
        )
        central += b"PK\x01\x02" + struct.pack("<H", 20) + header + struct.pack("<HHHII", 0, 0, 0, 0, len(out)) + name
        out += b"PK\x03\x04" + header + name + compressed
    end = struct.pack("<HHHHIIH", 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + b"PK\x05\x06" + end)


def _compress(member: Member) -> tuple[bytes, int, int]:
    """Compressed bytes, CRC and size of the member (its methods other than deflate only for small ones)."""
    if member.method == 8:
        return deflated(member.prefix, member.data, member.repeat)
    whole = member.prefix + member.data * member.repeat
    if member.method == 12:
        import bz2

        return bz2.compress(whole), zlib.crc32(whole), len(whole)
    if member.method == 14:
        import lzma

        raw = lzma.compress(whole, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA1, "dict_size": 1 << 20}])
        return struct.pack("<BBH", 9, 4, 5) + b"\x5d\x00\x00\x10\x00" + raw, zlib.crc32(whole), len(whole)
    return whole, zlib.crc32(whole), len(whole)  # stored, or a method no reader knows


def deflated(prefix: bytes, data: bytes, repeat: int, wrapped: bool = False) -> tuple[bytes, int, int]:
    """Raw deflate (or zlib with `wrapped`) of `prefix` and `data` repeated, its CRC-32 and size: a full flush
    after each part makes the copies independent, so one compressed copy is repeated instead of compressing
    gigabytes."""
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    chunk = deflate.compress(data) + deflate.flush(zlib.Z_FULL_FLUSH)
    body = head + chunk * repeat + deflate.flush()
    crc, adler = zlib.crc32(prefix), zlib.adler32(prefix)
    for _ in range(repeat):
        crc, adler = zlib.crc32(data, crc), zlib.adler32(data, adler) if wrapped else adler
    if wrapped:
        body = b"\x78\x9c" + body + struct.pack(">I", adler)
    return body, crc, len(prefix) + len(data) * repeat


# -- WhatsApp ---------------------------------------------------------------------------------------------------


def chat_lines(rng: random.Random, count: int) -> list[str]:
    when = datetime(2023, rng.randint(1, 12), rng.randint(13, 28), 8, 0)
    lines: list[str] = []
    for _ in range(count):
        when += timedelta(minutes=rng.randint(0, 300))
        author = rng.choice(["Anna", "Ben", "\u202a+1 555 0100\u202c", "Familie", "Dr. No: Yes"])
        text = odd_text(rng, rng.randint(1, 30)) if rng.random() < 0.3 else words(rng, rng.randint(1, 20))
        text = rng.choice([text, "<Media omitted>", "image omitted", "This message was deleted", f"{text} •" * 40])
        layout = rng.random()
        if layout < 0.4:
            lines.append(f"{when:%d/%m/%Y, %H:%M} - {author}: {text}")
        elif layout < 0.7:
            lines.append(f"\u200e[{when:%d.%m.%y, %H:%M:%S}] {author}: \u200e{text}")
        elif layout < 0.8:
            lines.append(f"{when:%m/%d/%y, %I:%M}\u202f{when:%p} - {author}: {text}")
        elif layout < 0.9:
            lines.append(text)  # a further line of the message before
        else:
            lines.append(
                f"{rng.randint(0, 99)}/{rng.randint(0, 99)}/{rng.randint(0, 99999)}, 99:{rng.randint(0, 99)} - x"
            )
    return lines


def chat_bytes(rng: random.Random, count: int) -> bytes:
    ending = rng.choice(["\n", "\r\n", "\r"])
    return (rng.choice(["\ufeff", ""]) + ending.join(chat_lines(rng, count)) + ending).encode("utf-8")


def whatsapp_txt(rng: random.Random, folder: Path) -> tuple[str, Path]:
    path = folder / "WhatsApp Chat with Anna.txt"
    data = chat_bytes(rng, rng.randint(0, 300))
    path.write_bytes(mutate(rng, data) if rng.random() < 0.4 else data)
    return "whatsapp", path


def whatsapp_zip(rng: random.Random, folder: Path) -> tuple[str, Path]:
    chat = Member(rng.choice(["_chat.txt", "WhatsApp Chat with Anna.txt", "notes.txt"]), chat_bytes(rng, 200))
    chat.method = rng.choice([8, 8, 8, 0, 12, 14, 9, 99])
    chat.flags = 1 if rng.random() < 0.1 else 0
    if rng.random() < 0.1:
        chat.stated_size = rng.choice([0, 10, 2**31])
    media = Member("00000012-PHOTO-2023-12-31.jpg", rng.randbytes(rng.randint(0, 5000)), method=rng.choice([0, 8]))
    data = zip_bytes(rng.sample([chat, media], 2))
    path = folder / "WhatsApp Chat - Familie.zip"
    path.write_bytes(mutate(rng, data) if rng.random() < 0.4 else data)
    return "whatsapp", path


def whatsapp_bomb(rng: random.Random, folder: Path) -> tuple[str, Path]:
    """A chat text inflating to 64 MB - 2 GB: line ends, text without line ends, or one message repeated."""
    pattern = rng.choice(
        [b"\n", b"x", b"x\n", b"13/01/2024, 10:00 - Anna: hi\n", b"[13.01.24, 10:00:00] A: x\n", b"1/1/1, 9:9 - \n"]
    )
    chat = Member("_chat.txt", pattern * (MiB // len(pattern)), repeat=rng.choice([64, 256, 1024, 2047]))
    chat.prefix = b"13/01/2024, 10:00 - Anna: the start\n"
    if rng.random() < 0.3:
        chat.stated_size = 1000  # the header lies
    path = folder / "WhatsApp Chat - Bomb.zip"
    path.write_bytes(zip_bytes([chat]))
    return "whatsapp", path


def whatsapp_giant(rng: random.Random, folder: Path) -> tuple[str, Path]:
    """One message of 5 MB: words on one line, paragraphs, or one token without spaces; as .txt or in a zip."""
    shape = rng.choice(["line", "paragraphs", "token"])
    if shape == "line":
        text = words(rng, GIANT_BYTES // 6)
    elif shape == "paragraphs":
        text = "\n\n".join(words(rng, 50) for _ in range(GIANT_BYTES // 300))
    else:
        text = base64.b64encode(rng.randbytes(GIANT_BYTES * 3 // 4)).decode()
    data = f"13/01/2024, 10:00 - Anna: {text}\n13/01/2024, 10:01 - Ben: ok\n".encode()
    if rng.random() < 0.5:
        path = folder / "WhatsApp Chat with Anna.txt"
        path.write_bytes(data)
    else:
        path = folder / "WhatsApp Chat - Anna.zip"
        path.write_bytes(zip_bytes([Member("_chat.txt", data)]))
    return "whatsapp", path


# -- Telegram ---------------------------------------------------------------------------------------------------

_DEEP, _BIG, _SURROGATE = "@@DEEP@@", "@@BIG@@", "@@SURROGATE@@"


def json_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice(
            [None, True, 0, -1, 2**63, 2**70, 1.5, 1e308, "", "x", _BIG, _DEEP, _SURROGATE, odd_text(rng, 5)]
        )
    if roll < 0.75:
        return [json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {
        rng.choice(["text", "type", "href", "id", "x"]): json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))
    }


def telegram_message(rng: random.Random, number: int) -> Any:
    when = datetime(2023, 12, 31, 21, 0, tzinfo=UTC) + timedelta(minutes=number)
    message: dict[str, Any] = {
        "id": number,
        "type": "message",
        "date": when.replace(tzinfo=None).isoformat(),
        "date_unixtime": str(int(when.timestamp())),
        "from": rng.choice(["Anna", "Ben", None]),
        "from_id": "user1",
        "text": rng.choice([words(rng, 10), ["see ", {"type": "link", "text": "https://example.org"}]]),
    }
    if rng.random() < 0.5:  # a field of the wrong type, a number too big, a date beyond any calendar
        key = rng.choice(
            ["id", "type", "date", "date_unixtime", "text", "from", "poll", "file", "photo", "reply_to_message_id"]
        )
        message[key] = rng.choice([json_value(rng), "99999999999999", 1e300, str(2**100)])
    return message if rng.random() < 0.95 else json_value(rng)


def telegram(rng: random.Random, folder: Path) -> tuple[str, Path]:
    messages = [telegram_message(rng, n) for n in range(rng.randint(0, 120))]
    chat: dict[str, Any] = {
        "name": rng.choice(["Anna", 5, None]),
        "type": "personal_chat",
        "id": 4242,
        "messages": messages,
    }
    if rng.random() < 0.5:
        left = {"list": rng.choice([[chat], 7, None, "x"])}
        export: Any = {"personal_information": {}, "chats": {"list": [chat, json_value(rng)]}, "left_chats": left}
    else:
        export = chat
    text = json.dumps(export)  # ensure_ascii: a lone surrogate is written as a "\ud800" escape, as broken exporters do
    depth = rng.choice([3, 3, 3, 3, 3, 3, 100, 2000, 100_000])
    text = text.replace(json.dumps(_DEEP), "[" * depth + "]" * depth, 1).replace(json.dumps(_DEEP), "[]")
    text = text.replace(json.dumps(_BIG), "7" * rng.choice([20, 4301, 5000, 50_000]))
    text = text.replace(json.dumps(_SURROGATE), json.dumps("lone \ud800 and \udcc3 pair \ud83d\ude00"))
    data = text.encode()
    path = folder / "result.json"
    path.write_bytes(mutate(rng, data) if rng.random() < 0.3 else data)
    return "telegram", path


# -- documents --------------------------------------------------------------------------------------------------


def docx(paragraphs: Iterable[str], repeat: int = 1, table: bool = False, block: bytes = b"") -> bytes:
    """A minimal .docx: its content types, relationships and document part (what python-docx needs); with
    `repeat`, a bomb: `block` that many times over."""
    body = block or "".join(f"<w:p><w:r><w:t>{_xml(p)}</w:t></w:r></w:p>" for p in paragraphs).encode()
    if table:
        body += b'<w:tbl><w:tr><w:tc><w:tcPr><w:gridSpan w:val="999999999"/></w:tcPr><w:p><w:r><w:t>a</w:t>'
        body += b"</w:r></w:p></w:tc><w:tc><w:tcPr><w:vMerge/></w:tcPr><w:p/></w:tc></w:tr></w:tbl>"
    start = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
    end = b"</w:body></w:document>"
    types = (
        b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        b'<Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" '
        b'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
    )
    rels = (
        b'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
        b'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        b'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
    )
    # A bomb: the body repeated `repeat` times over (then the closing tags never come: the bound stops it first).
    document = Member("word/document.xml", body if repeat > 1 else body + end, repeat=repeat, prefix=start)
    return zip_bytes([Member("[Content_Types].xml", types), Member("_rels/.rels", rels), document])


def _xml(text: str) -> str:
    return "".join(c for c in text if c.isprintable()).replace("&", "&amp;").replace("<", "&lt;")


def pdf(pages: list[str], bomb_bytes: int = 0) -> bytes:
    """A PDF with one Helvetica line per page; `bomb_bytes`: its first page's content stream inflates that far."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for index, text in enumerate(pages):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * index} 0 R >>".encode()
        )
        shown = text.replace("\\", "").replace("(", "").replace(")", "")
        stream = f"BT /F1 12 Tf 72 720 Td ({shown}) Tj ET".encode("latin-1", "replace")
        if bomb_bytes and index == 0:
            stream = deflated(stream, b" " * MiB, max(1, bomb_bytes // MiB), wrapped=True)[0]
            objects.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream")
        else:
            objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    start = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{start}\n%%EOF\n".encode()
    return bytes(out)


def html(rng: random.Random, paragraphs: int) -> bytes:
    tags = ["p", "div", "blockquote", "b", "table", "tr", "td", "script", "style", "li", "pre"]
    pool = [_xml(words(rng, rng.randint(1, 30))) for _ in range(100)]
    parts = ['<html><head><meta charset="windows-1252"></head><body>']
    for _ in range(paragraphs):
        tag = rng.choice(tags)
        parts.append(f"<{tag}>{rng.choice(pool)}</{tag}>" if rng.random() < 0.9 else f"<{tag}>")  # some never closed
    return "".join(parts).encode("utf-8", "replace")


def document(rng: random.Random, big: bool = True) -> tuple[str, bytes]:
    """A document's name and bytes: valid, mutated, or a bomb of its kind. `big`: it may also be a big valid
    one (12 MB of text, 60,000 HTML paragraphs, 3000 PDF pages: seconds of honest work each), so a case holds
    at most one such, and a case over the time limit is a pathology, not a big workload."""
    suffix = rng.choice([".txt", ".md", ".html", ".docx", ".docx", ".pdf", ".pdf"])
    variant = rng.random()
    if suffix in {".txt", ".md"}:
        long = variant >= 0.7 and big
        text = "y" * rng.choice([100_000, 12_000_000]) if long else odd_text(rng, 2000)
        data = text.encode("utf-8", "surrogatepass")
    elif suffix == ".html":
        data = html(rng, rng.choice([20, 2000, 60_000] if big else [20, 2000]))
    elif suffix == ".docx":
        if variant < 0.15:  # 128 MB - 1 GB of paragraphs from a few hundred KB
            paragraph = f"<w:p><w:r><w:t>{words(rng, 8)}</w:t></w:r></w:p>".encode()
            data = docx([], repeat=rng.choice([128, 512, 1024]), block=paragraph * (MiB // len(paragraph)))
        else:
            data = docx((words(rng, 20) for _ in range(rng.randint(1, 300))), table=rng.random() < 0.2)
    elif variant < 0.1:
        data = pdf(["a bomb"], bomb_bytes=rng.choice([100, 500]) * MiB)
    else:
        data = pdf([words(rng, 12) for _ in range(rng.choice([1, 5, 3000] if big else [1, 5]))])
    if rng.random() < 0.35:
        data = mutate(rng, data)
    return f"document{suffix}", data


def files(rng: random.Random, folder: Path) -> tuple[str, Path]:
    root = folder / "docs"
    root.mkdir()
    for index in range(rng.choice([1, 1, 1, 3])):
        name, data = document(rng, big=index == 0)
        (root / f"{index}-{name}").write_bytes(data)
    paths = list(root.iterdir())
    return "files", paths[0] if len(paths) == 1 else root


# -- mail -------------------------------------------------------------------------------------------------------


def mail(rng: random.Random, number: int, big: bool = False) -> bytes:
    """A mail, broken in the ways mail is; `big`: its first attachment may be a big document."""
    when = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=number)
    headers = [
        f"From: {rng.choice(['Anna <anna@example.org>', '=?x-unknown?q?Caf=E9?= <c@x>', 'a' * rng.choice([5, 5000])])}",
        f"Date: {rng.choice([format_datetime(when), 'yesterday', 'Mon, 99 Foo 99999 99:99:99 +9999'])}",
        f"Subject: {rng.choice(['Re: ' + words(rng, 4), '=?utf-8?b?!!!?=', odd_text(rng, 4)])}",
        f"Message-ID: <m{number}.{rng.randint(0, 9)}@example.org>",
        "MIME-Version: 1.0",
    ]
    if rng.random() < 0.05:
        headers.append("X-Long: " + "h" * rng.choice([70_000, 200_000]))
    boundary = f"b{number}"
    parts = [
        f"Content-Type: text/plain; charset={rng.choice(['utf-8', 'x-unknown', 'latin-1'])}\n\n{odd_text(rng, 40)}"
    ]
    count = rng.choice([0, 1, 2, 3, 2500])  # thousands of parts: the parser took minutes
    for _ in range(count):
        small = ("photo.jpg", rng.randbytes(rng.randint(0, 3000)))
        name, data = document(rng, big and len(parts) == 1) if count < 10 and rng.random() < 0.5 else small
        encoded = base64.encodebytes(data).decode()
        if rng.random() < 0.1:
            encoded = encoded[: len(encoded) // 2] + "!!!"
        parts.append(
            f"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
            f'Content-Disposition: attachment; filename="{name}"\n\n{encoded}'
        )
    if rng.random() < 0.05:  # multiparts nested hundreds deep
        depth = rng.choice([100, 1000])
        nested = "".join(f'Content-Type: multipart/mixed; boundary="n{d}"\n\n--n{d}\n' for d in range(depth))
        parts.append(nested + "Content-Type: text/plain\n\ndeep")
    body = "".join(f"--{boundary}\n{part}\n" for part in parts) + f"--{boundary}--\n"
    head = "\n".join(headers) + f'\nContent-Type: multipart/mixed; boundary="{boundary}"\n'
    data = f"{head}\n{body}".encode("utf-8", "surrogateescape")
    return mutate(rng, data) if rng.random() < 0.2 else data


def mbox(rng: random.Random, folder: Path) -> tuple[str, Path]:
    path = folder / "archive.mbox"
    with path.open("wb") as out:
        for number in range(rng.randint(1, 8)):
            out.write(b"From sender@example.org Sat Dec 30 21:05:09 2023\n")
            for line in mail(rng, number, big=number == 0).split(b"\n"):
                out.write((b">" + line if line.startswith(b"From ") else line) + b"\n")
    if rng.random() < 0.2:
        path.write_bytes(b"From x Sat Dec 30 21:05:09 2023\n" + mutate(rng, path.read_bytes()))
    return "mbox", path


def maildir(rng: random.Random, folder: Path) -> tuple[str, Path]:
    root = folder / "Mail"
    for box in rng.sample(["", ".Sent", "Archive/2023"], rng.randint(1, 3)):
        for sub in ("cur", "new", "tmp"):
            (root / box / sub).mkdir(parents=True, exist_ok=True)
        for number in range(rng.randint(0, 5)):
            name = rng.choice(
                [f"{1704056709 + number}.{number}.host:2,S", "9" * 30 + ".x", f"weird {number}", f"{number}"]
            )
            (root / box / rng.choice(["cur", "new"]) / name).write_bytes(mail(rng, number, big=not box and not number))
    return "maildir", root


# -- running a case (in a child process) ------------------------------------------------------------------------

GENERATORS: dict[str, tuple[int, Callable[[random.Random, Path], tuple[str, Path]]]] = {
    "whatsapp_txt": (14, whatsapp_txt),
    "whatsapp_zip": (14, whatsapp_zip),
    "whatsapp_bomb": (4, whatsapp_bomb),
    "whatsapp_giant": (3, whatsapp_giant),
    "telegram": (18, telegram),
    "mbox": (14, mbox),
    "maildir": (8, maildir),
    "files": (25, files),
}


def case_type(seed: int, index: int, only: str | None = None) -> str:
    if only:
        return only
    if index % INGEST_EVERY == 0:
        return "ingest"
    rng = random.Random(f"type:{seed}:{index}")
    return rng.choices(list(GENERATORS), weights=[w for w, _ in GENERATORS.values()])[0]


class NullHistory:
    """What `ingest` stores into, storing nothing: and checking no text would be embedded whole."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self.stats = stats

    async def existing(self, person: str, record_ids: Sequence[str]) -> set[str]:
        return set()

    async def add(self, person: str, records: Sequence[Any]) -> int:
        from bridge.history.ingest import LONG_TEXT_CHARS

        self.stats["violations"] += sum(1 for r in records if len(r.text) > LONG_TEXT_CHARS)
        return len(records)


def checked(items: Iterable[Any], stats: dict[str, Any], max_chars: int) -> Iterator[Any]:
    """The importer's items as they pass: each a record within the bound, or a `Problem`."""
    from bridge.history.importers.base import Problem
    from bridge.messages import HistoryRecord

    for item in items:
        if isinstance(item, Problem):
            stats["problems"] += 1
            if item.why.startswith("reading stopped"):  # the last-resort guard: a reader missed an error
                stats["fallbacks"].append(str(item)[:300])
        elif isinstance(item, HistoryRecord):
            stats["records"] += 1
            stats["violations"] += len(item.text) > max_chars
        else:
            stats["violations"] += 1
        yield item


def import_like_confide(kind: str, path: Path, stats: dict[str, Any]) -> None:
    from bridge.config import ImportSettings
    from bridge.history.importers.base import WrongKind
    from bridge.history.importers.registry import open_importer
    from bridge.history.importers.text import PASSAGE_CHARS
    from bridge.history.ingest import ingest

    importer = open_importer(kind, path, "me")  # as `confide import KIND PATH` does
    try:
        importer.check()
    except WrongKind:
        stats["refused"] = True
        return
    bound = max(ImportSettings().max_message_chars, 2 * PASSAGE_CHARS)
    items = checked(importer.items(), stats, bound)
    asyncio.run(ingest(NullHistory(stats), "me", items, chat=importer.chat))


def import_with_the_embedder(path: Path, stats: dict[str, Any]) -> None:
    """A 5 MB message through the real embedder and an embedded shard: memory must not follow its size."""
    from bridge.config import ImportSettings
    from bridge.history.importers.registry import open_importer
    from bridge.history.index import HistoryIndex
    from bridge.history.ingest import ingest
    from bridge.history.store.edge import EdgeStore
    from bridge.models.embedder import LocalEmbedder

    async def run() -> None:
        embedder = LocalEmbedder()
        await embedder.open()
        store = EdgeStore(path.parent / "shard")
        history = HistoryIndex(store, embedder)
        await store.open(embedder.dimension)
        importer = open_importer("whatsapp", path, "me", limits=ImportSettings(max_message_chars=INGEST_MESSAGE_CHARS))
        summary = await ingest(history, "me", checked(importer.items(), stats, INGEST_MESSAGE_CHARS), chat=True)
        stats["imported"] = summary.imported
        await store.close()
        await embedder.close()

    asyncio.run(run())


def generate(seed: int, index: int, kind: str, folder: Path) -> tuple[str, Path]:
    """The case's file, written by a forked process: building a bomb or a 5 MB message takes memory that is
    not the importer's, and the child's peak RSS must be the importer's alone."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the forked writer: it reports the kind and path, or its traceback, and exits
        os.close(read)
        try:
            rng = random.Random(f"{seed}:{index}")
            made = whatsapp_giant(rng, folder) if kind == "ingest" else GENERATORS[kind][1](rng, folder)
            os.write(write, json.dumps([made[0], str(made[1])]).encode())
        except BaseException:
            os.write(write, json.dumps(["error", traceback.format_exc()[-2000:]]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        made_kind, made_path = json.loads(pipe.read() or b'["error", "the generator died"]')
    os.waitpid(pid, 0)
    if made_kind == "error":
        raise RuntimeError(f"generating the case failed:\n{made_path}")
    return made_kind, Path(made_path)


def run_case(seed: int, index: int, kind: str) -> dict[str, Any]:
    stats: dict[str, Any] = {"i": index, "type": kind, "status": "ok", "records": 0, "problems": 0, "violations": 0}
    stats["fallbacks"] = []
    started = generated = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="confide-fuzz-") as workdir:
        try:
            importer_kind, path = generate(seed, index, kind, Path(workdir))
            generated = time.monotonic()
            if kind == "ingest":
                import_with_the_embedder(path, stats)
            else:
                import_like_confide(importer_kind, path, stats)
        except BaseException as exc:  # what the fuzzing looks for: anything escaping the importer
            stats["status"] = "traceback"
            stats["error"] = "".join(traceback.format_exception(exc))[-2000:]
    stats["seconds"] = round(time.monotonic() - generated, 3)
    stats["generate_seconds"] = round(generated - started, 3)
    stats["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return stats


def child(seed: int) -> None:
    """Runs the cases named on stdin, one result line each on stdout as soon as it is known."""
    import logging

    import bridge  # noqa: F401  (the environment locked down before any ML import, as the CLI does)
    import bridge.history.importers.registry as registry

    logging.basicConfig(level=logging.CRITICAL)  # problems are counted here, not logged
    registry.importer_classes()  # every importer imported before the first case is timed
    import docx  # noqa: F401
    import html2text  # noqa: F401
    import pypdf  # noqa: F401

    print(f"ready {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}", flush=True)
    for index, kind in json.loads(sys.stdin.readline()):
        print(json.dumps(run_case(seed, index, kind)), flush=True)


# -- the parent: batches, time limits, peak RSS -----------------------------------------------------------------


@dataclass
class Totals:
    cases: int = 0
    tracebacks: list[dict[str, Any]] = field(default_factory=list)
    hangs: list[tuple[int, str]] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    results: list[dict[str, Any]] = field(default_factory=list)


class Lines:
    """Lines from a child's stdout, each waited for at most a given time."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def next(self, timeout: float) -> str | None:
        """The next line; "" at end of output, None when none came in time."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return ""
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


def run_batch(seed: int, cases: list[tuple[int, str]], timeout: float, totals: Totals) -> list[tuple[int, str]]:
    """Runs `cases` in one child; returns those left to run after a hang or a crash."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", "--seed", str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(cases).encode() + b"\n")
    process.stdin.close()
    lines = Lines(process.stdout.fileno())
    ready = lines.next(120) or ""
    if not ready.startswith("ready "):
        process.kill()
        raise SystemExit("the child process did not start: run it alone to see why (benchmarks/fuzz.py --child)")
    peak = float(ready.split()[1])  # the child's own, before any case: each case's growth is measured from it
    left: list[tuple[int, str]] = []
    for position, (index, kind) in enumerate(cases):
        limit = timeout * (4 if kind == "ingest" else 1)  # the embedder loads first
        line = lines.next(limit)
        if line is None or line == "":
            totals.cases += 1
            if line is None:
                totals.hangs.append((index, kind))
                peak = max(peak, own_peak_mb(process.pid))  # the hung case's memory so far
            else:
                totals.tracebacks.append({"i": index, "type": kind, "error": "the child process died"})
                peak = max(peak, os.wait4(process.pid, 0)[2].ru_maxrss / 1024)
                process.returncode = -1
            left = cases[position + 1 :]
            break
        result = json.loads(line)
        result["rss_growth_mb"], peak = result["rss_mb"] - peak, result["rss_mb"]
        totals.cases += 1
        totals.results.append(result)
        if result["status"] != "ok":
            totals.tracebacks.append(result)
    if process.returncode is None:
        process.kill()
        process.wait()
    totals.peak_rss_mb = max(totals.peak_rss_mb, peak)
    return left


def own_peak_mb(pid: int) -> float:
    """A live process's own peak RSS (VmHWM: its case files' writers, forked, are not counted in it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0.0)


def report(totals: Totals) -> None:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for result in totals.results:
        by_type.setdefault(result["type"], []).append(result)
    for kind, results in sorted(by_type.items()):
        slowest = max(results, key=lambda r: r["seconds"])
        refused = sum(1 for r in results if r.get("refused"))
        records, problems = sum(r["records"] for r in results), sum(r["problems"] for r in results)
        largest = max(results, key=lambda r: r["rss_growth_mb"])
        print(
            f"  {kind:15} {len(results):6} cases, {refused:5} refused, {records:8} records, {problems:7} problems, "
            f"slowest {slowest['seconds']:.1f} s (case {slowest['i']}), "
            f"RSS raised most to {largest['rss_mb']:.0f} MB (+{largest['rss_growth_mb']:.0f}, case {largest['i']})"
        )
    fallbacks = [f for r in totals.results for f in r["fallbacks"]]
    violations = sum(r["violations"] for r in totals.results)
    print(f"  last-resort problems (an error no reader caught): {len(fallbacks)}; records over a bound: {violations}")
    for text in fallbacks[:5]:
        print(f"    {text}")
    for failed in totals.tracebacks[:5]:
        print(f"  traceback in case {failed['i']} ({failed['type']}):\n{failed.get('error', '')}")
    for index, kind in totals.hangs[:10]:
        print(f"  hang: case {index} ({kind})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a case may take before it is a hang")
    parser.add_argument("--batch", type=int, default=40, help="cases per child process")
    parser.add_argument("--only", choices=[*GENERATORS, "ingest"], help="cases of this type only (to look closer)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.seed)
        return
    cases = [(index, case_type(args.seed, index, args.only)) for index in range(args.cases)]
    # Embedder cases run alone: their child loads the model, which would weigh on the others' peak RSS.
    queue = [[case] for case in cases if case[1] == "ingest"]
    plain = [case for case in cases if case[1] != "ingest"]
    queue += [plain[start : start + args.batch] for start in range(0, len(plain), args.batch)]
    totals = Totals()
    started = time.monotonic()
    while queue:
        batch = queue.pop(0)
        if left := run_batch(args.seed, batch, args.timeout, totals):
            queue.insert(0, left)
        if totals.cases % 200 < len(batch):
            print(f"  {totals.cases}/{args.cases} cases, {time.monotonic() - started:.0f} s", file=sys.stderr)
    report(totals)
    print(
        f"fuzz: {totals.cases} cases, {len(totals.tracebacks)} tracebacks, {len(totals.hangs)} hangs, "
        f"peak RSS {totals.peak_rss_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
