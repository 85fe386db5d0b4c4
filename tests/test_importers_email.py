"""Mail: body text apart from quotes and signatures, charsets, HTML, attachments, threads; mbox and Maildir."""

from __future__ import annotations

import time
import tracemalloc
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from adapters.email.mime import attachments, mail_text, normalized_subject, split_reply, thread_root
from bridge.history.importers.base import Problem, WrongKind
from bridge.history.importers.registry import open_importer
from bridge.messages import HistoryRecord
from tests.import_fixtures import (
    BROKEN_BASE64,
    BROKEN_CHARSET,
    HTML_ONLY,
    LYING_CHARSET,
    NO_MESSAGE_ID,
    NOT_A_MAIL,
    OUTLOOK_BODY,
    REPLY_BODY,
    ROOT_BODY,
    mail,
    mail_with_attachments,
    tiny_pdf,
    write_big_mbox,
    write_json,
    write_maildir,
    write_mbox,
)


def parse(data: bytes) -> EmailMessage:
    return message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def run(kind: str, path: Path) -> tuple[list[HistoryRecord], list[Problem]]:
    items = list(open_importer(kind, path, "me").items())
    return [i for i in items if isinstance(i, HistoryRecord)], [i for i in items if isinstance(i, Problem)]


# -- mime: the body logic the live adapter shares ------------------------------------------------------------


def test_signature_and_bottom_quote_are_kept_out_of_the_text() -> None:
    root = mail_text(mail("Cabin weekend", ROOT_BODY))
    assert root.new_text == "Hi all,\n\nThe wifi password at the cabin is pinecone-42."
    assert root.signature == "Anna Smith\nPhone +1 555 0101"
    reply = mail_text(mail("Re: Cabin weekend", REPLY_BODY))
    assert reply.new_text == "Thanks! I'll bring the boots."
    # The attribution Gmail wraps over two lines belongs to the quote.
    assert reply.quoted.startswith("On Sun, Dec 31, 2023 at 9:05 PM Anna Smith <anna@example.com>\nwrote:")
    assert "pinecone-42" in reply.quoted and "pinecone-42" not in reply.new_text


def test_outlook_original_message_blocks_are_quotes() -> None:
    body = mail_text(mail("RE: Cabin weekend", OUTLOOK_BODY))
    assert body.new_text == "Sounds great, count me in."
    assert body.quoted.startswith("________________________________\nFrom: Ben Jones")
    new, quoted, _ = split_reply("Yes.\n\n-----Original Message-----\nFrom: Ben\nWhen is it?")
    assert (new, quoted) == ("Yes.", "-----Original Message-----\nFrom: Ben\nWhen is it?")


def test_interleaved_answers_stay_and_plain_sentences_are_not_quotes() -> None:
    new, quoted, _ = split_reply("> When do we leave?\nAt 7.\n> Who drives?\nBen does.\n")
    assert new == "At 7.\nBen does."
    assert quoted == "> When do we leave?\n> Who drives?"
    text = "The teacher wrote:\nbring a packed lunch on Friday."
    assert split_reply(text) == (text, "", "")


def test_html_only_mail_is_made_readable_and_its_blockquote_set_apart() -> None:
    body = mail_text(parse(HTML_ONLY))
    assert body.from_html is True
    assert body.new_text == "Liebe Grüße aus München: the ferry leaves at 7:40."  # latin-1, quoted-printable
    assert "When does the ferry leave?" in body.quoted and "Am 31.12.2023" in body.quoted
    assert "track()" not in body.new_text + body.quoted and "color" not in body.new_text


def test_empty_plain_alternative_falls_back_to_html() -> None:
    msg = mail("Menu", " \n")
    msg.add_alternative("<p>Soup of the day: <i>lentil</i></p>", subtype="html")
    body = mail_text(msg)
    assert (body.new_text, body.from_html) == ("Soup of the day: lentil", True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (BROKEN_CHARSET, "Meet at the café on Rue Cler."),  # unknown charset: UTF-8 fails, Windows-1252 reads it
        (LYING_CHARSET, "A naïve question about the façade colour."),  # says us-ascii, is UTF-8
        (BROKEN_BASE64, "The boat leaves at noon"),  # bad padding and trailing junk
    ],
)
def test_broken_charsets_and_encodings_never_crash(raw: bytes, expected: str) -> None:
    assert mail_text(parse(raw)).new_text.startswith(expected)


def test_attachments_threads_and_subjects() -> None:
    msg = mail_with_attachments(tiny_pdf(["Ferry ticket"]))
    found = attachments(msg)
    assert [(a.name, a.mime_type) for a in found] == [
        ("packing.txt", "text/plain"),
        ("ferry-ticket.pdf", "application/pdf"),
        ("map.png", "image/png"),
    ]
    assert found[0].data.startswith(b"Sleeping bag") and found[1].data.startswith(b"%PDF")
    assert mail_text(msg).new_text == "See the attached list and the ticket."  # the .txt is not the body
    reply = mail("Re: x", "y", message_id="<c@x>", references="<a@x> <b@x>", in_reply_to="<b@x>")
    assert thread_root(reply) == "a@x"
    assert thread_root(mail("x", "y", message_id="<own@x>")) == "own@x"
    assert normalized_subject("AW: Re: RE[2]: Fwd:  Cabin   weekend") == "Cabin weekend"
    assert normalized_subject("Trip: Lisbon") == "Trip: Lisbon"


# -- mbox ----------------------------------------------------------------------------------------------------


def archive(tmp_path: Path) -> Path:
    return write_mbox(
        tmp_path / "archive.mbox",
        [
            mail("Cabin weekend", ROOT_BODY.replace("\n\n-- ", "\nFrom now on, bring towels.\n\n-- ")),
            mail(
                "Re: Cabin weekend",
                REPLY_BODY,
                sender="Ben Jones <ben@example.com>",
                message_id="<r1@example.com>",
                references="<root@example.com>",
                in_reply_to="<root@example.com>",
            ),
            # Only In-Reply-To, naming the reply: the importer knows that one's root.
            mail("RE: Cabin weekend", OUTLOOK_BODY, message_id="<r2@example.com>", in_reply_to="<r1@example.com>"),
            mail_with_attachments(tiny_pdf(["Ferry ticket", "Seat 12A, deck 3"])),
            BROKEN_CHARSET,
            HTML_ONLY,
            NOT_A_MAIL,
            NO_MESSAGE_ID,
        ],
    )


def test_mbox_import(tmp_path: Path) -> None:
    records, problems = run("mbox", archive(tmp_path))
    assert [(p.where, "not a mail" in p.why) for p in problems] == [("archive.mbox message 7", True)]
    mails = [r for r in records if "attachment" not in r.extra]
    assert len(mails) == 7
    root, reply, outlook = mails[:3]
    # The body line the mbox writer escaped as ">From now on" is text again, not a quote.
    assert root.text.endswith("pinecone-42.\nFrom now on, bring towels.") and root.quoted is None
    assert root.signature.startswith("Anna Smith")
    assert (reply.conversation, reply.author) == ("Cabin weekend", "Ben Jones <ben@example.com>")
    assert reply.text == "Thanks! I'll bring the boots." and "pinecone-42" in reply.quoted
    assert {root.extra["thread"], reply.extra["thread"], outlook.extra["thread"]} == {"root@example.com"}
    assert reply.link == "r1@example.com" and reply.channel == "email"
    assert {r.source for r in records} == {"mbox:archive.mbox"}
    assert all(r.time.tzinfo is not None for r in records)

    with_files = mails[3]
    assert with_files.extra["attachments"] == ["packing.txt", "ferry-ticket.pdf", "map.png"]
    passages = [r for r in records if r.extra.get("mail") == with_files.link]
    assert [(p.extra["attachment"], p.page, p.text) for p in passages] == [
        ("packing.txt", None, "Sleeping bag\n\nHeadlamp and spare batteries"),
        ("ferry-ticket.pdf", 1, "Ferry ticket"),
        ("ferry-ticket.pdf", 2, "Seat 12A, deck 3"),
    ]
    assert passages[2].link == "attach@example.com#ferry-ticket.pdf#passage-2"
    assert mails[4].text == "Meet at the café on Rue Cler."
    assert mails[5].extra["from_html"] is True and mails[5].conversation == "Ferry"
    assert mails[6].link == "archive.mbox message 8" and mails[6].text == "Mail without an id."


def test_mbox_ids_are_stable_and_unique(tmp_path: Path) -> None:
    path = archive(tmp_path)
    first, _ = run("mbox", path)
    again, _ = run("mbox", path)
    assert [r.id for r in first] == [r.id for r in again]
    assert len({r.id for r in first}) == len(first)
    # The same mail filed in another mailbox is the same record.
    other, _ = run("mbox", write_mbox(tmp_path / "sent.mbox", [mail("Cabin weekend", ROOT_BODY)]))
    assert other[0].id == first[0].id


def test_a_broken_pdf_attachment_is_a_problem_and_the_mail_stays(tmp_path: Path) -> None:
    path = write_mbox(tmp_path / "a.mbox", [mail_with_attachments(b"%PDF-1.4 this is not really a pdf")])
    records, problems = run("mbox", path)
    assert records[0].text == "See the attached list and the ticket."
    assert [r.extra.get("attachment") for r in records[1:]] == ["packing.txt"]
    assert [p.where for p in problems] == ["a.mbox message 1 attachment 'ferry-ticket.pdf'"]


def test_large_mbox_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.mbox"
    count = write_big_mbox(path, 20 * 1024 * 1024)
    size = path.stat().st_size
    started = time.monotonic()
    tracemalloc.start()
    try:
        seen = 0
        for item in open_importer("mbox", path, "me").items():
            assert isinstance(item, HistoryRecord)
            seen += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    assert peak < size / 10, f"peak {peak} bytes for a {size}-byte mbox"
    assert time.monotonic() - started < 60


# -- Maildir -------------------------------------------------------------------------------------------------


def test_maildir_with_maildirplusplus_folders(tmp_path: Path) -> None:
    root = write_maildir(
        tmp_path / "Mail",
        {
            "cur/1704056709.M1P1.host:2,S": mail("Cabin weekend", ROOT_BODY),
            "new/1704056800.M2P1.host": mail(
                "Re: Cabin weekend", REPLY_BODY, message_id="<r1@example.com>", references="<root@example.com>"
            ),
            "cur/1704056900.M3P1.host:2,": NOT_A_MAIL,
            ".Sent/cur/1704057000.M4P1.host:2,S": mail("Lisbon", "Booked the flights.", message_id="<s@example.com>"),
        },
    )
    records, problems = run("maildir", root)
    assert [p.where for p in problems] == ["cur/1704056900.M3P1.host:2,"]
    assert [(r.extra["folder"], r.conversation) for r in records] == [
        ("INBOX", "Cabin weekend"),
        ("INBOX", "Cabin weekend"),
        ("Sent", "Lisbon"),
    ]
    assert records[1].extra["thread"] == "root@example.com"
    assert {r.source for r in records} == {"maildir:Mail"}
    again, _ = run("maildir", root)
    assert [r.id for r in records] == [r.id for r in again]


def test_a_folder_of_maildirs_and_a_mail_without_date(tmp_path: Path) -> None:
    undated = b"From: Gus <gus@example.com>\r\nSubject: Undated\r\n\r\nNo date header.\r\n"
    root = write_maildir(tmp_path / "export", {"INBOX/new/1704067200.M1.host": undated})
    records, problems = run("maildir", root)
    assert problems == []
    assert records[0].text == "No date header." and records[0].time.year == 2024  # from the delivery name
    assert records[0].extra["folder"] == "INBOX"


# -- wrong kinds ---------------------------------------------------------------------------------------------


def test_other_files_are_refused_before_anything(tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("Shopping list: milk, eggs\n")
    single = tmp_path / "one.eml"
    single.write_bytes(mail("x", "y").as_bytes())
    json_file = write_json(tmp_path / "result.json", {"messages": []})
    for path in (note, single, json_file, tmp_path / "missing.mbox"):
        with pytest.raises(WrongKind):
            next(iter(open_importer("mbox", path, "me").items()))
    empty = tmp_path / "folder"
    empty.mkdir()
    for path in (note, empty, tmp_path / "missing"):
        with pytest.raises(WrongKind):
            next(iter(open_importer("maildir", path, "me").items()))


TAKEOUT = b"""From 1785369400000000000@xxx Mon Jan 01 10:00:00 +0000 2024
X-GM-THRID: 1785369400000000000
X-Gmail-Labels: Inbox,Important,Opened
From: Anna <anna@example.org>
To: me@example.org
Subject: Fwd: Boat
Date: Mon, 1 Jan 2024 10:00:00 +0000
Message-ID: <fwd-1@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="m1"

--m1
Content-Type: multipart/related; boundary="r1"

--r1
Content-Type: multipart/alternative; boundary="a1"

--a1
Content-Type: text/html; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

<p>Gr=FC=DFe! See Ben's mail below.</p>
--a1--
--r1
Content-Type: image/png
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--r1--
--m1
Content-Type: message/rfc822

From: Ben <ben@example.org>
Date: Sun, 31 Dec 2023 09:00:00 +0000
Subject: Boat
Content-Type: text/plain; charset=utf-8

The boat is ready on Friday; the key is with the harbour master.
--m1--

"""


def test_a_takeout_mail_with_nested_parts_and_a_forwarded_mail_keeps_both_texts(tmp_path: Path) -> None:
    """Gmail Takeout: HTML-only text deep in mixed/related/alternative parts, and a mail forwarded as an
    attachment (message/rfc822) whose text is what the person wants to find again."""
    path = tmp_path / "All mail Including Spam and Trash.mbox"
    path.write_bytes(TAKEOUT)
    items = list(open_importer("mbox", path, "me").items())
    [record] = [i for i in items if isinstance(i, HistoryRecord)]
    assert record.text.startswith("Grüße! See Ben's mail below.")
    assert "---------- Forwarded message ----------\nFrom: Ben <ben@example.org> (Sun, 31 Dec 2023" in record.text
    assert record.text.endswith("The boat is ready on Friday; the key is with the harbour master.")
