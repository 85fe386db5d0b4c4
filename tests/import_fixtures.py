"""Builders of small, realistic exports for the importer tests, written at run time (no binaries committed)."""

from __future__ import annotations

import io
import json
import quopri
import zipfile
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

NNBSP = "\u202f"  # WhatsApp (Android 13+) writes a narrow no-break space before AM/PM
LRM = "\u200e"  # iOS marks system texts and attachments with it

# -- WhatsApp ------------------------------------------------------------------------------------------------

# Android, month-first, 12-hour clock; the only date that settles the order is the last one (01/13/24).
ANDROID_US = [
    "12/31/23, 9:00\u202fPM - Messages and calls are end-to-end encrypted. No one outside of this chat, not even "
    "WhatsApp, can read or listen to them. Tap to learn more.",
    '12/31/23, 9:01\u202fPM - Anna created group "Trip: Lisbon"',
    "12/31/23, 9:02\u202fPM - Anna added Ben",
    "12/31/23, 9:02\u202fPM - Carl joined using this group's invite link",
    "12/31/23, 9:05\u202fPM - Anna: The cabin wifi password is",  # line 5
    "pinecone-42",
    "",
    "(all lowercase: the router is old)",
    "12/31/23, 9:05\u202fPM - Ben: <Media omitted>",  # line 9
    "12/31/23, 9:06\u202fPM - Ben: IMG-20231231-WA0001.jpg (file attached)",
    "View from the porch",
    "12/31/23, 9:07\u202fPM - Anna: This message was deleted",
    "12/31/23, 9:08\u202fPM - Ben: ok",  # line 13
    "12/31/23, 9:08\u202fPM - Ben: ok",
    "12/31/23, 9:09\u202fPM - \u202a+1 (555) 010-9999\u202c: who is this? Call me at 10:30",
    "12/31/23, 11:59\u202fPM - Anna: Happy new year: see you at 1:00 PM",
    "12/31/23, 12:30 PM - Anna: lunch first",
    "01/13/24, 12:15 AM - Anna: late night <This message was edited>",  # line 18
]

# iOS, day-first, 24-hour clock with seconds; the group name is the author of system texts.
IOS_DE = [
    f"[31.12.23, 21:05:09] Familie: {LRM}Messages and calls are end-to-end encrypted. No one outside of this chat, "
    "not even WhatsApp, can read or listen to them.",
    f"[31.12.23, 21:05:10] Familie: {LRM}Anna added Ben",
    "[31.12.23, 21:06:00] Anna: Wir treffen uns um 10 Uhr",
    "am Bahnhof, Gleis 3.",
    f"{LRM}[31.12.23, 21:07:00] Ben: {LRM}<attached: 00000012-PHOTO-2023-12-31-21-07-00.jpg>",
    f"[31.12.23, 21:07:30] Ben: {LRM}image omitted",
    f"[31.12.23, 21:08:00] Ben: {LRM}Fahrplan.pdf • {LRM}3 pages {LRM}document omitted",
    f"[31.12.23, 21:09:00] Anna: {LRM}You deleted this message.",
    "[01.01.24, 00:00:01] Anna: Frohes neues Jahr!",
]


def write_whatsapp_txt(folder: Path, lines: list[str], name: str = "WhatsApp Chat with Anna.txt") -> Path:
    """Written as WhatsApp does on Android: UTF-8 with a BOM and CRLF line ends."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path


def write_whatsapp_zip(folder: Path, lines: list[str], name: str = "WhatsApp Chat - Familie.zip") -> Path:
    """The iOS "Export chat" zip: `_chat.txt` beside the media files."""
    path = folder / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("00000012-PHOTO-2023-12-31-21-07-00.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
        archive.writestr("_chat.txt", "\n".join(lines) + "\n")
        archive.writestr("00000013-AUDIO-2023-12-31-21-08-00.opus", b"OggS")
    return path


# -- Telegram ------------------------------------------------------------------------------------------------


def _unix(year: int, month: int, day: int, hour: int, minute: int) -> str:
    return str(int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()))


def telegram_chat() -> dict[str, Any]:
    """A personal chat as "Export chat history" writes it, with the awkward message shapes."""
    return {
        "name": "Anna",
        "type": "personal_chat",
        "id": 4242,
        "messages": [
            {
                "id": 1,
                "type": "service",
                "date": "2023-12-31T21:00:00",
                "date_unixtime": _unix(2023, 12, 31, 21, 0),
                "actor": "Anna",
                "actor_id": "user1",
                "action": "phone_call",
                "text": "",
                "text_entities": [],
            },
            {
                "id": 2,
                "type": "message",
                "date": "2023-12-31T22:05:09",  # local time of the exporting computer
                "date_unixtime": _unix(2023, 12, 31, 21, 5),
                "from": "Anna",
                "from_id": "user1",
                "text": "The cabin door code is 4711",
                "text_entities": [{"type": "plain", "text": "The cabin door code is 4711"}],
            },
            {
                "id": 3,
                "type": "message",
                "date": "2023-12-31T22:06:00",
                "date_unixtime": _unix(2023, 12, 31, 21, 6),
                "edited": "2023-12-31T22:07:00",
                "edited_unixtime": _unix(2023, 12, 31, 21, 7),
                "from": "Me",
                "from_id": "user2",
                "reply_to_message_id": 2,
                "text": [
                    "Thanks! Directions: ",
                    {"type": "link", "text": "https://example.org/cabin"},
                    " and ",
                    {"type": "bold", "text": "bring boots"},
                    ", see ",
                    {"type": "text_link", "text": "the map", "href": "https://example.org/map"},
                ],
            },
            {
                "id": 4,
                "type": "message",
                "date": "2023-12-31T22:08:00",
                "date_unixtime": _unix(2023, 12, 31, 21, 8),
                "from": "Me",
                "from_id": "user2",
                "forwarded_from": "Travel Deals",
                "text": "Flights to Lisbon from 49 EUR",
            },
            {
                "id": 5,
                "type": "message",
                "date": "2023-12-31T22:09:00",
                "date_unixtime": _unix(2023, 12, 31, 21, 9),
                "from": "Anna",
                "from_id": "user1",
                "photo": "photos/photo_1@31-12-2023_22-09-00.jpg",
                "width": 1280,
                "height": 960,
                "text": "porch view",
            },
            {
                "id": 6,
                "type": "message",
                "date": "2023-12-31T22:10:00",
                "date_unixtime": _unix(2023, 12, 31, 21, 10),
                "from": "Anna",
                "from_id": "user1",
                "file": "(File not included. Change data exporting settings to download.)",
                "file_name": "floor-plan.pdf",
                "mime_type": "application/pdf",
                "text": "",
            },
            {"id": 7, "type": "message", "from": "Anna", "text": "no date at all"},  # malformed
            {
                "id": 8,
                "type": "message",
                "date": "2023-12-31T22:12:00",  # an old export: no date_unixtime
                "from": None,  # a deleted account
                "from_id": "user99",
                "text": "hello from the past",
            },
            {
                "id": 9,
                "type": "message",
                "date": "2023-12-31T22:13:00",
                "date_unixtime": _unix(2023, 12, 31, 21, 13),
                "from": "Anna",
                "from_id": "user1",
                "file": "stickers/sticker.webp",
                "media_type": "sticker",
                "sticker_emoji": "😀",
                "text": "",
            },
        ],
    }


def telegram_account() -> dict[str, Any]:
    """ "Export Telegram data" (the whole account): chats, saved messages and left chats."""
    saved = {
        "type": "saved_messages",
        "id": 777,
        "messages": [
            {
                "id": 1,
                "type": "message",
                "date": "2024-01-02T08:00:00",
                "date_unixtime": _unix(2024, 1, 2, 7, 0),
                "from": "Me",
                "from_id": "user2",
                "text": "Passport number is in the blue folder",
            }
        ],
    }
    left = {
        "name": "Old neighbours",
        "type": "private_supergroup",
        "id": 999,
        "messages": [
            {
                "id": 10,
                "type": "message",
                "date": "2022-05-01T10:00:00",
                "date_unixtime": _unix(2022, 5, 1, 8, 0),
                "from": "Dora",
                "from_id": "user5",
                "text": "The bins go out on Tuesdays",
            }
        ],
    }
    return {
        "about": "Here is the data you requested.",
        "personal_information": {"user_id": 2, "first_name": "Me", "phone_number": "+1 555 0100"},
        "contacts": {"about": "", "list": []},
        "chats": {"about": "", "list": [telegram_chat(), saved]},
        "left_chats": {"about": "", "list": [left]},
    }


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


# -- Mail ----------------------------------------------------------------------------------------------------

WHEN = datetime(2023, 12, 31, 21, 5, tzinfo=UTC)


def mail(
    subject: str,
    body: str,
    *,
    sender: str = "Anna Smith <anna@example.com>",
    message_id: str | None = "<root@example.com>",
    references: str | None = None,
    in_reply_to: str | None = None,
    when: datetime = WHEN,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "me@example.com"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    if message_id:
        msg["Message-ID"] = message_id
    if references:
        msg["References"] = references
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    msg.set_content(body)
    return msg


ROOT_BODY = "Hi all,\n\nThe wifi password at the cabin is pinecone-42.\n\n-- \nAnna Smith\nPhone +1 555 0101\n"
REPLY_BODY = (
    "Thanks! I'll bring the boots.\n\n"
    "On Sun, Dec 31, 2023 at 9:05 PM Anna Smith <anna@example.com>\n"
    "wrote:\n\n"
    "> Hi all,\n>\n> The wifi password at the cabin is pinecone-42.\n"
)
OUTLOOK_BODY = (
    "Sounds great, count me in.\n\n"
    "________________________________\n"
    "From: Ben Jones <ben@example.com>\n"
    "Sent: Sunday, December 31, 2023 10:00 PM\n"
    "To: Anna Smith <anna@example.com>\n"
    "Subject: Re: Cabin weekend\n\n"
    "Thanks! I'll bring the boots.\n"
)
HTML_BODY = (
    "<html><head><style>p { color: red }</style><script>track()</script></head><body>"
    "<p>Liebe Grüße aus <b>München</b>: the ferry leaves at 7:40.</p>"
    '<div class="gmail_quote">Am 31.12.2023 um 21:05 schrieb Anna &lt;anna@example.com&gt;:'
    "<blockquote><p>When does the ferry leave?</p></blockquote></div></body></html>"
)


def mail_with_attachments(pdf: bytes) -> EmailMessage:
    msg = mail(
        "Fwd: Packing list",
        "See the attached list and the ticket.",
        message_id="<attach@example.com>",
        sender="Ben Jones <ben@example.com>",
    )
    msg.add_attachment(b"Sleeping bag\n\nHeadlamp and spare batteries\n", "text", "plain", filename="packing.txt")
    msg.add_attachment(pdf, "application", "pdf", filename="ferry-ticket.pdf")
    msg.add_attachment(b"\x89PNG\r\n\x1a\nfake", "image", "png", filename="map.png")
    return msg


def raw_mail(headers: str, body: bytes) -> bytes:
    """A mail byte for byte: for the broken ones EmailMessage would refuse to write."""
    return headers.replace("\n", "\r\n").encode("ascii") + b"\r\n" + body


BROKEN_CHARSET = raw_mail(
    "From: Carl <carl@example.com>\nSubject: =?x-unknown?q?Caf=E9?=\nDate: Mon, 1 Jan 2024 09:00:00 +0100\n"
    "Message-ID: <charset@example.com>\nContent-Type: text/plain; charset=x-unknown-charset\n"
    "Content-Transfer-Encoding: 8bit\n",
    b"Meet at the caf\xe9 on Rue Cler.\r\n",
)
LYING_CHARSET = raw_mail(
    "From: Carl <carl@example.com>\nSubject: =?utf-8?q?Re=3A_Na=C3=AFve_question?=\n"
    "Date: Mon, 1 Jan 2024 09:05:00 +0100\nMessage-ID: <ascii@example.com>\n"
    "Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 8bit\n",
    "A naïve question about the façade colour.\r\n".encode(),
)
BROKEN_BASE64 = raw_mail(
    "From: Dora <dora@example.com>\nSubject: Truncated\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"
    "Message-ID: <b64@example.com>\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n",
    b"VGhlIGJvYXQgbGVhdmVzIGF0IG5vb24=!!!\r\nVGhl\r\n",
)
HTML_ONLY = raw_mail(
    "From: Eve <eve@example.com>\nSubject: AW: Ferry\nDate: Mon, 1 Jan 2024 11:00:00 +0100\n"
    "Message-ID: <html@example.com>\nIn-Reply-To: <ferry@example.com>\n"
    "Content-Type: text/html; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n",
    quopri.encodestring(HTML_BODY.encode("latin-1")),
)
NOT_A_MAIL = b"\x00\x01 binary junk, no header here\r\n\r\nmore junk\r\n"
NO_MESSAGE_ID = raw_mail(
    "From: Fred <fred@example.com>\nSubject: No id\nDate: Tue, 2 Jan 2024 12:00:00 +0000\n", b"Mail without an id.\r\n"
)


def write_mbox(path: Path, mails: list[bytes | EmailMessage]) -> Path:
    """An mboxrd file: "From " separator lines, and body lines starting with "From " escaped with ">"."""
    with path.open("wb") as out:
        for item in mails:
            data = item.as_bytes() if isinstance(item, EmailMessage) else item
            out.write(b"From sender@example.com Sat Dec 30 21:05:09 2023\n")
            for line in data.replace(b"\r\n", b"\n").split(b"\n"):
                out.write((b">" + line if line.lstrip(b">").startswith(b"From ") else line) + b"\n")
            out.write(b"\n")
    return path


def write_maildir(folder: Path, mails: dict[str, bytes | EmailMessage]) -> Path:
    """Files named "sub/name" under `folder`, creating cur/new/tmp for every maildir."""
    for relative, item in mails.items():
        path = folder / relative
        for sub in ("cur", "new", "tmp"):
            (path.parent.parent / sub).mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.as_bytes() if isinstance(item, EmailMessage) else item)
    return folder


def write_big_mbox(path: Path, target_bytes: int) -> int:
    """Generated mails of about 50 KB each until the file reaches `target_bytes`; returns the mail count."""
    paragraph = "The quarterly figures for the orchard were discussed at length, with apples and pears. " * 8
    count = 0
    with path.open("wb") as out:
        while out.tell() < target_bytes:
            count += 1
            body = "\n\n".join(f"{count}-{n} {paragraph}" for n in range(70))
            msg = mail(f"Report {count}", body, message_id=f"<big-{count}@example.com>")
            out.write(b"From sender@example.com Sat Dec 30 21:05:09 2023\n")
            out.write(msg.as_bytes().replace(b"\r\n", b"\n") + b"\n")
    return count


# -- Documents -----------------------------------------------------------------------------------------------


def tiny_pdf(pages: list[str]) -> bytes:
    """A valid PDF with one Helvetica text line per line of each page (enough for pypdf to extract)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for index, text in enumerate(pages):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * index} 0 R >>".encode()
        )
        shown = " ".join(f"({_pdf_escape(line)}) Tj T*" for line in text.split("\n") if line)
        stream = f"BT /F1 12 Tf 14 TL 72 720 Td {shown} ET".encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    start = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    out.write("".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{start}\n%%EOF\n".encode())
    return out.getvalue()


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def docx_bytes() -> bytes:
    from docx import Document

    document = Document()
    document.add_heading("Cabin handbook", level=1)
    document.add_paragraph("The boiler switch is behind the pantry door.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Wifi"
    table.cell(0, 1).text = "pinecone-42"
    table.cell(1, 0).text = "Alarm"
    table.cell(1, 1).text = "1234"
    document.add_paragraph("Leave the key under the blue pot.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


HTML_PAGE = (
    b'<html><head><meta charset="windows-1252"><title>Recipes</title><style>body{font:serif}</style>'
    b"<script>alert('x')</script></head><body><h1>Caf\xe9 au lait</h1><p>Warm the milk to 65 degrees.</p>"
    b"<p>Pour it over the coffee.</p></body></html>"
)


def ogg_opus(seconds: float, payload: bytes) -> bytes:
    """An Ogg Opus file as RFC 7845 lays it out (OpusHead, OpusTags, one audio page whose granule position says
    how long it plays), with `payload` as its audio packet: what the tests' transcription server "hears"."""
    pre_skip = 312
    head = b"OpusHead" + bytes([1, 1]) + pre_skip.to_bytes(2, "little") + (48000).to_bytes(4, "little") + b"\0\0\0"
    tags = b"OpusTags" + (4).to_bytes(4, "little") + b"test" + (0).to_bytes(4, "little")
    granule = pre_skip + round(seconds * 48000)
    return _ogg_page(head, 0, 0, 0x02) + _ogg_page(tags, 0, 1, 0x00) + _ogg_page(payload, granule, 2, 0x04)


def _ogg_page(packet: bytes, granule: int, sequence: int, flags: int) -> bytes:
    lacing = [255] * (len(packet) // 255) + [len(packet) % 255]
    header = (
        b"OggS" + bytes([0, flags]) + granule.to_bytes(8, "little") + (1).to_bytes(4, "little")
        + sequence.to_bytes(4, "little") + b"\0\0\0\0" + bytes([len(lacing)]) + bytes(lacing)
    )  # fmt: skip
    page = header + packet
    return page[:22] + _ogg_crc(page).to_bytes(4, "little") + page[26:]


def _ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, no reflection, initial 0), over the page with its CRC field zero."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc
