"""Hostile mail against the email adapter's real SMTP server on loopback, with the whole bridge in-process.

Replays of genuinely signed mails (dkimpy, with its default header set and over-signed) with headers prepended or
appended, a body extended past `l=`, an unsigned Subject or Content-Type, a signed "yes" re-threaded: nothing is
deleted from the person's history and no command runs, while an honest signed question is answered and an honest
/forget + "yes" still deletes. Then a stranger's header bombs and deeply nested mail: dropped or refused for good
(554) fast, without stalling the event loop; one peer cannot take every place, strangers' large or slow mails keep
no person's mail waiting; IMAP skips what can never be read; DATA read in pieces is read as RFC 5321 reads it.
Replies go to a relay sink on loopback (aiosmtpd); DKIM keys are served to the adapter by `dnsfunc`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim
import pytest
from aioimaplib import Response
from aiosmtpd.controller import Controller

from adapters.email.adapter import EmailAdapter
from adapters.email.auth import authenticate, parse_authentication_results, trusted_results
from adapters.email.headers import Bounds, Unreadable, read_head
from adapters.email.imap_reader import ImapReader
from adapters.email.intake import Reading
from adapters.email.settings import EmailSettings
from adapters.email.smtp_server import TOO_MUCH, read_data
from adapters.email.state import EmailState
from bridge.config import PersonSettings, Settings
from bridge.history.index import HistoryIndex
from bridge.messages import HistoryRecord, utcnow
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import Harness
from tests.helpers import eventually, make_settings, model_for
from tests.mailservers import DkimKey, free_port

DOMAIN = "example.test"
ALICE = f"alice@{DOMAIN}"
CONFIDE = "confide@confide.test"
SELECTOR = b"s1"
BOUNDS = Bounds(max_header_bytes=65536, max_parts=500, max_address_bytes=8192, max_addresses=100, max_depth=50)


# -- the world around Confide ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def key(tmp_path_factory: pytest.TempPathFactory) -> DkimKey:
    return DkimKey.generate(tmp_path_factory.mktemp("dkim"))


@pytest.fixture
def dns(key: DkimKey) -> Any:
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return key.txt_record if name.decode().rstrip(".") == f"s1._domainkey.{DOMAIN}" else None

    return lookup


class Sink:
    """The relay Confide's replies go out through: keeps them."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.replies: list[EmailMessage] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.replies.append(BytesParser(policy=policy.default).parsebytes(envelope.content))  # type: ignore[arg-type]
        return "250 OK"

    def texts(self) -> list[str]:
        return [_body(reply) for reply in self.replies]


@pytest.fixture
def sink() -> Iterator[Sink]:
    found = Sink(free_port())
    relay = Controller(found, hostname="127.0.0.1", port=found.port)
    relay.start()
    try:
        yield found
    finally:
        relay.stop()


@pytest.fixture
async def seeded(history: HistoryIndex) -> HistoryIndex:
    await history.add("alice", [
        HistoryRecord(id="n1", person="alice", channel="whatsapp", conversation="Family", author="Anna", time=utcnow(),
                      text="The spare key for the cabin is under the blue flower pot.", source="whatsapp:family.zip"),
    ])  # fmt: skip
    return history


def settings_for(tmp_path: Path, llm: FakeOpenAI, sink_port: int, **email: Any) -> Settings:
    values: dict[str, Any] = {
        "smtp_enabled": True, "smtp_port": free_port(), "addresses": [CONFIDE], "relay_host": "127.0.0.1",
        "relay_port": sink_port, "relay_security": "none", "from_address": CONFIDE,
    }  # fmt: skip
    values.update(email)
    persons = [PersonSettings(id="alice", name="Alice", accounts=[f"email:{ALICE}"])]
    # The person's questions are not added to her history: its size is what these tests watch.
    return make_settings(tmp_path, {"main": model_for(llm)}, persons=persons, email=EmailSettings(**values),
                         index_conversations=False)  # fmt: skip


@pytest.fixture
async def confide(
    tmp_path: Path, fake_llm: FakeOpenAI, sink: Sink, seeded: HistoryIndex, dns: Any
) -> AsyncIterator[Harness]:
    harness = await running(settings_for(tmp_path, fake_llm, sink.port), seeded, dns)
    try:
        yield harness
    finally:
        await harness.stop()


async def running(settings: Settings, history: HistoryIndex, dns: Any) -> Harness:
    adapter = EmailAdapter(settings, dnsfunc=dns)
    harness = await Harness(settings, history, adapter).start()  # type: ignore[arg-type]
    await asyncio.wait_for(adapter.smtp_started.wait(), 10)
    return harness


def port(h: Harness) -> int:
    return h.settings.email.smtp_port  # type: ignore[attr-defined,no-any-return]


async def send(h: Harness, raw: bytes, sender: str = ALICE, **options: Any) -> int:
    """The SMTP reply code Confide gave the mail (250, or the 4xx/5xx it was refused with)."""
    try:
        await aiosmtplib.send(raw, sender=sender, recipients=[CONFIDE], hostname="127.0.0.1", port=port(h),
                              start_tls=False, timeout=60, **options)  # fmt: skip
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code
    return 250


async def stored(h: Harness) -> int:
    assert h.db is not None
    return await h.db.run(lambda conn: conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0])  # type: ignore[no-any-return]


# -- mails ---------------------------------------------------------------------------------------------


def mail(subject: str, body: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = ALICE
    msg["To"] = CONFIDE
    msg["Subject"] = subject
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = make_msgid(domain=DOMAIN)
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def signed(msg: EmailMessage, key: DkimKey, headers: list[bytes] | None = None, length: bool = False) -> bytes:
    """Alice's provider's signature: dkimpy's default header set (From over-signed) unless `headers` is given."""
    raw = msg.as_bytes(policy=policy.SMTP)
    return dkim.sign(raw, SELECTOR, DOMAIN.encode(), key.private_pem, include_headers=headers, length=length) + raw


def prepended(raw: bytes, *lines: str) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode() + raw


def appended(raw: bytes, *lines: str) -> bytes:
    """Headers added at the bottom of the header block."""
    return raw.replace(b"\r\n\r\n", "".join(f"\r\n{line}" for line in lines).encode() + b"\r\n\r\n", 1)


def replaced(raw: bytes, name: str, value: str) -> bytes:
    """The one `name` header's value replaced (no second header of that name)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = [f"{name}: {value}".encode() if line.lower().startswith(name.lower().encode() + b":") else line
             for line in head.split(b"\r\n")]  # fmt: skip
    return b"\r\n".join(lines) + sep + body


def _body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return "" if part is None else str(part.get_content()).replace("\r\n", "\n")


OVER_SIGNED = [b"From", b"From", b"Subject", b"Subject", b"To", b"Date", b"Message-ID", b"MIME-Version",
               b"Content-Type", b"Content-Type", b"Content-Transfer-Encoding", b"Content-Transfer-Encoding",
               b"References", b"In-Reply-To"]  # fmt: skip
NO_SUBJECT = [b"From", b"To", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type", b"Content-Transfer-Encoding"]
NO_FRAMING = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"References", b"In-Reply-To"]
NO_THREAD = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type",
             b"Content-Transfer-Encoding"]  # fmt: skip


async def verdict_of(raw: bytes, dns: Any) -> tuple[bool, bool]:
    """(authenticated, proven) as auth.py judges the mail."""
    head = read_head(raw, BOUNDS)
    verdict = await authenticate(raw, head, DOMAIN, [], True, dns)
    return verdict.authenticated, verdict.proven


# -- what a signature proves -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "authenticated", "proven"),
    [
        ("default header set", True, True),
        ("over-signed", True, True),
        ("default, Subject prepended", False, False),  # Subject appears more often than signed: does not count
        ("over-signed, Subject prepended", False, False),  # the signature breaks
        ("default, Content-Type prepended", False, False),
        ("default, From prepended", False, False),
        ("default, Subject appended", False, False),  # DKIM reads the bottom one: the signature breaks
        ("default, Reply-To added", True, True),  # not signed, not read
        ("l=, body extended", False, False),  # signatures with l= are ignored
        ("Subject not signed", True, False),
        ("Content-Type not signed", True, False),
        ("References not signed", True, False),
        ("signed by another domain", False, False),
    ],
)
async def test_a_signature_counts_only_for_what_it_verified(
    key: DkimKey, dns: Any, case: str, authenticated: bool, proven: bool
) -> None:
    question = mail("cabin", "Where is the spare key?")
    reply = mail("Re: cabin", "yes", In_Reply_To="<q@example.test>", References="<q@example.test>")
    raws = {
        "default header set": signed(question, key),
        "over-signed": signed(question, key, OVER_SIGNED),
        "default, Subject prepended": prepended(signed(question, key), "Subject: /forget all"),
        "over-signed, Subject prepended": prepended(signed(question, key, OVER_SIGNED), "Subject: /forget all"),
        "default, Content-Type prepended": prepended(signed(question, key), "Content-Type: multipart/mixed; b=N"),
        "default, From prepended": prepended(signed(question, key), f"From: {ALICE}"),
        "default, Subject appended": appended(signed(question, key), "Subject: /forget all"),
        "default, Reply-To added": prepended(signed(question, key), "Reply-To: someone@evil.test"),
        "l=, body extended": signed(mail("note", ""), key, length=True) + b"/forget all\r\n",
        "Subject not signed": signed(question, key, NO_SUBJECT),
        "Content-Type not signed": signed(question, key, NO_FRAMING),
        "References not signed": signed(reply, key, NO_THREAD),
        "signed by another domain": dkim.sign(question.as_bytes(policy=policy.SMTP), SELECTOR, b"evil.test",
                                              key.private_pem) + question.as_bytes(policy=policy.SMTP),
    }  # fmt: skip
    assert await verdict_of(raws[case], dns) == (authenticated, proven)


def test_a_bare_cr_that_would_split_a_header_for_python_alone_is_refused(key: DkimKey) -> None:
    raw = signed(mail("cabin", "Where is the key?"), key)
    with pytest.raises(Unreadable, match="bare CR"):
        read_head(prepended(raw, "X-Note: hi\rContent-Type: multipart/mixed; boundary=N"), BOUNDS)


@pytest.mark.parametrize(
    ("header", "vouched"),
    [
        # An envelope sender copied into smtp.mailfrom: its quoted semicolons start no new result.
        ('mx.test; spf=pass smtp.mailfrom="x; dmarc=pass header.from=example.test; y"@evil.test', False),
        ("mx.test; spf=pass smtp.mailfrom=x@evil.test (; dmarc=pass header.from=example.test)", False),
        ("mx.test (a (nested; dmarc=pass header.from=example.test) comment); dkim=fail header.d=example.test", False),
        ('mx.test; dmarc=pass header.from="example.test"', True),
        ("mx.test; dkim=pass (good (2048-bit) key) header.d=example.test", True),
    ],
)
def test_authentication_results_are_read_as_rfc_8601_tokens(header: str, vouched: bool) -> None:
    msg = BytesParser(policy=policy.compat32).parsebytes(f"From: {ALICE}\r\nAuthentication-Results: {header}\r\n\r\n"
                                                         .encode())  # fmt: skip
    assert (trusted_results(msg, DOMAIN, ["mx.test"]) is not None) is vouched


def test_a_quoted_property_stays_one_value() -> None:
    _, results = parse_authentication_results('mx.test; spf=pass smtp.mailfrom="a; b"@evil.test')
    assert results == [("spf", "pass", {"smtp.mailfrom": '"a; b"@evil.test'})]


# -- replays through the real SMTP server -----------------------------------------------------------------


async def test_the_reported_replay_deletes_nothing(
    confide: Harness, sink: Sink, seeded: HistoryIndex, key: DkimKey, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit's reproduction: /forget all and an empty-reading body prepended to one signed mail, then "yes" and
    the first mail's id prepended to a second."""
    caplog.set_level(logging.INFO, logger="adapters.email")
    first = mail("cabin key", "Where is the spare key for the cabin?")
    second = mail("thanks", "Thanks a lot!")
    attack = prepended(signed(first, key), "Subject: /forget all", "Content-Type: multipart/mixed; boundary=NOPE")
    assert await send(confide, attack) == 250
    confirm = prepended(signed(second, key), "Subject: yes", f"References: {first['Message-ID']}")
    assert await send(confide, confirm) == 250
    assert await stored(confide) == 0, "a replayed mail with prepended headers was taken"
    assert "more than one subject, content-type header" in caplog.text
    # An honest question afterwards is the only mail answered.
    assert await send(confide, signed(mail("dinner", "When is grandma's dinner?"), key)) == 250
    await eventually(lambda: sink.replies, within_s=20)
    await asyncio.sleep(0.5)  # a reply to an attack, were one coming, arrives now
    assert len(sink.replies) == 1 and sink.texts()[0].startswith("You asked: When is grandma's dinner?")
    assert await seeded.count("alice") == 1


@pytest.mark.parametrize(
    "attack",
    [
        "prepended to the default header set",
        "prepended to an over-signed mail",
        "appended below the signed headers",
        "a body extended past l=",
        "a Content-Type replaced where the signature does not cover it",
    ],
)
async def test_a_replayed_signed_mail_runs_no_command(
    confide: Harness, sink: Sink, seeded: HistoryIndex, key: DkimKey, attack: str
) -> None:
    question = mail("cabin key", "Where is the spare key for the cabin?")
    raws = {
        "prepended to the default header set": prepended(signed(question, key), "Subject: /forget all",
                                                         "Content-Type: multipart/mixed; boundary=NOPE"),
        "prepended to an over-signed mail": prepended(signed(question, key, OVER_SIGNED), "Subject: /forget all",
                                                      "Content-Type: multipart/mixed; boundary=NOPE"),
        "appended below the signed headers": appended(signed(mail("", ""), key), "Subject: /forget all"),
        "a body extended past l=": signed(mail("note", ""), key, length=True) + b"/forget all\r\n",
        # The signature covers Subject "forget all" but not the framing: the body made to read as empty.
        "a Content-Type replaced where the signature does not cover it": replaced(
            signed(mail("/forget all", "Please ignore the subject, it was a joke."), key, NO_FRAMING),
            "Content-Type", "multipart/mixed; boundary=NOPE"),
    }  # fmt: skip
    assert await send(confide, raws[attack]) == 250
    assert await send(confide, signed(mail("dinner", "When is grandma's dinner?"), key)) == 250
    await eventually(lambda: any("grandma" in text for text in sink.texts()), within_s=20)
    await asyncio.sleep(0.5)
    assert not any("permanently delete" in text for text in sink.texts()), sink.texts()
    assert await seeded.count("alice") == 1


async def test_an_unsigned_subject_or_thread_gives_no_authority_and_honest_forget_still_works(
    confide: Harness, sink: Sink, seeded: HistoryIndex, key: DkimKey
) -> None:
    """A signature that does not cover Subject (or References) still answers, but commands nothing: a subject-only
    mail's Subject swapped for /forget, a signed "yes" re-threaded onto a pending /forget. Alice's own mails, signed
    as providers sign, do delete."""
    # Subject not signed: an attacker swaps it; the mail is answered, the command refused.
    swapped = replaced(signed(mail("When is the dinner?", ""), key, NO_SUBJECT), "Subject", "/forget all")
    assert await send(confide, swapped) == 250
    await eventually(lambda: len(sink.replies) >= 1, within_s=20)
    assert "/forget changes your history" in sink.texts()[0], sink.texts()
    # Alice asks to forget, honestly: Confide asks her to confirm.
    forget = mail("tidy up", "/forget all")
    assert await send(confide, signed(forget, key)) == 250
    await eventually(lambda: len(sink.replies) >= 2, within_s=20)
    assert "This will permanently delete 1 piece(s)" in sink.texts()[1], sink.texts()
    # A signed "yes" of hers that was not in that thread, re-threaded by adding References: refused.
    thread = {"In_Reply_To": forget["Message-ID"], "References": forget["Message-ID"]}
    rethreaded = appended(signed(mail("Re: other", "yes"), key, NO_THREAD), *(f"{k.replace('_', '-')}: {v}"
                                                                             for k, v in thread.items()))  # fmt: skip
    assert await send(confide, rethreaded) == 250
    await eventually(lambda: len(sink.replies) >= 3, within_s=20)
    assert "Confirming changes your history" in sink.texts()[2], sink.texts()
    assert await seeded.count("alice") == 1
    # Her own "yes" in the thread, signed with the default header set (References and In-Reply-To included).
    assert await send(confide, signed(mail("Re: tidy up", "yes", **thread), key)) == 250
    await eventually(lambda: len(sink.replies) >= 4, within_s=20)
    assert await seeded.count("alice") == 0, sink.texts()


async def test_an_honest_signed_question_is_answered(confide: Harness, sink: Sink, key: DkimKey) -> None:
    assert await send(confide, signed(mail("cabin", "Where is the spare key for the cabin?"), key)) == 250
    await eventually(lambda: sink.replies, within_s=20)
    [reply] = sink.replies
    assert reply["To"] == ALICE and reply["Subject"] == "Re: cabin"
    assert _body(reply).startswith("You asked: Where is the spare key for the cabin?")


# -- a stranger's costly mail ------------------------------------------------------------------------------


class LagProbe:
    """The longest the event loop was late to wake a 10 ms sleep while the probe ran."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - began - 0.01)

    def __enter__(self) -> LagProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def stranger(extra: str, body: str = "hello") -> bytes:
    """A stranger's unsigned mail with one more header, folded into lines SMTP carries (at most 1,000 bytes)."""
    extra = "\r\n ".join(extra[start : start + 76] for start in range(0, len(extra), 76))
    return (f"From: mallory@evil.test\r\nTo: {CONFIDE}\r\nSubject: hi\r\n{extra}\r\n\r\n{body}\r\n").encode()


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Sender: " + "," * 60_000, "Sender header is"),
        ("To: " + "," * 60_000, "To header is"),
        ("Cc: " + ", ".join(f"p{n}@evil.test" for n in range(300)), "Cc header names"),
        ("Reply-To: " + '"' * 8_000, None),  # under the bound: never parsed before authentication
    ],
)
async def test_a_header_bomb_is_dropped_without_stalling_the_loop(
    confide: Harness, sink: Sink, key: DkimKey, caplog: pytest.LogCaptureFixture, header: str, reason: str | None
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.email")
    with LagProbe() as lag:
        began = time.perf_counter()
        assert await send(confide, stranger(header), sender="mallory@evil.test") == 250
        took = time.perf_counter() - began
    assert took < 2.0, f"the mail took {took:.1f} s to judge"
    assert lag.worst < 0.25, f"the event loop stalled {lag.worst:.2f} s"
    assert reason is None or reason in caplog.text, caplog.text
    assert await stored(confide) == 0


@pytest.mark.parametrize(
    "shape", ["message/rfc822 1,000 deep", "multipart 1,000 deep", "comments 3,000 deep in Return-Path"]
)
async def test_a_mail_nested_too_deeply_is_refused_for_good(
    confide: Harness, caplog: pytest.LogCaptureFixture, shape: str
) -> None:
    """554, not 451: a 451 made the sending server retry it forever."""
    caplog.set_level(logging.INFO, logger="adapters.email")
    raws = {
        "message/rfc822 1,000 deep": nested_mail(1000),
        "multipart 1,000 deep": stranger("Content-Type: multipart/mixed; boundary=b0", nested_multipart(1000)),
        "comments 3,000 deep in Return-Path": stranger("Return-Path: " + "(" * 3000 + "x@evil.test" + ")" * 3000),
    }
    with LagProbe() as lag:
        assert await send(confide, raws[shape], sender="mallory@evil.test") == 554
    assert lag.worst < 0.25, f"the event loop stalled {lag.worst:.2f} s"
    assert "refused" in caplog.text and await stored(confide) == 0


def nested_mail(depth: int) -> bytes:
    inner = f"From: mallory@evil.test\r\nTo: {CONFIDE}\r\nSubject: deep\r\n\r\nhello\r\n"
    for _ in range(depth):
        inner = "Content-Type: message/rfc822\r\n\r\n" + inner
    return (f"From: mallory@evil.test\r\nTo: {CONFIDE}\r\nSubject: deep\r\n" + inner).encode()


def nested_multipart(depth: int) -> str:
    body = "hello\r\n"
    for level in reversed(range(1, depth)):
        body = f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n{body}--b{level}--\r\n"
    return f"--b0\r\n{body}--b0--"


async def test_one_peer_cannot_take_every_place(
    tmp_path: Path, fake_llm: FakeOpenAI, sink: Sink, seeded: HistoryIndex, dns: Any, key: DkimKey
) -> None:
    """A peer holding its share of mails in transfer waits with one more, then gets 451 4.3.2 before sending it; a
    mail from another address is taken and answered meanwhile."""
    settings = settings_for(tmp_path, fake_llm, sink.port, max_receiving=2, max_receiving_per_peer=1, busy_wait_s=0.5)
    h = await running(settings, seeded, dns)
    reader, writer = await asyncio.open_connection("127.0.0.1", port(h))

    async def reply_to(line: str | None) -> bytes:
        if line is not None:
            writer.write(f"{line}\r\n".encode())
        while (answer := await reader.readline())[3:4] == b"-":
            pass  # a multi-line reply (EHLO)
        return answer

    try:
        for line in (None, "EHLO mallory", "MAIL FROM:<mallory@evil.test>", f"RCPT TO:<{CONFIDE}>"):
            assert (await reply_to(line)).startswith((b"220", b"250")), line
        assert (await reply_to("DATA")).startswith(b"354")
        writer.write(b"From: mallory@evil.test\r\nSubject: slow\r\n\r\nstill sending")  # and never ends
        await writer.drain()
        began = time.perf_counter()
        assert await send(h, stranger("X-Second: yes"), sender="mallory@evil.test") == 451
        assert time.perf_counter() - began >= 0.5, "refused without waiting its turn"
        raw = signed(mail("cabin", "Where is the spare key?"), key)
        assert await send(h, raw, source_address=("127.0.0.2", 0)) == 250
        await eventually(lambda: sink.replies, within_s=20)
    finally:
        writer.close()
        await h.stop()
    assert _body(sink.replies[0]).startswith("You asked: Where is the spare key?")


async def test_a_large_mail_that_could_never_be_answered_gives_its_place_back_while_it_arrives(
    tmp_path: Path, fake_llm: FakeOpenAI, sink: Sink, seeded: HistoryIndex, dns: Any, key: DkimKey,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Judged on its first MiB, an unsigned mail is read on without being kept and holds no place: with one place in
    all, Alice's signed mail is taken and answered while it still arrives. A large signed mail of hers is kept."""
    caplog.set_level(logging.INFO, logger="adapters.email")
    settings = settings_for(tmp_path, fake_llm, sink.port, max_receiving=1, max_receiving_per_peer=1, busy_wait_s=5)
    h = await running(settings, seeded, dns)
    reader, writer = await asyncio.open_connection("127.0.0.1", port(h), local_addr=("127.0.0.2", 0))
    try:
        for line in ("EHLO mallory", f"MAIL FROM:<{ALICE}>", f"RCPT TO:<{CONFIDE}>", "DATA"):
            writer.write(f"{line}\r\n".encode())
        writer.write(f"From: {ALICE}\r\nTo: {CONFIDE}\r\nSubject: big\r\n\r\n".encode() + b"x" * 998 + b"\r\n")
        writer.write((b"y" * 998 + b"\r\n") * 1500)  # 1.5 MB, and the mail goes on
        await writer.drain()
        await eventually(lambda: "dropped while arriving" in caplog.text, within_s=20)
        assert await send(h, signed(mail("cabin", "Where is the spare key?"), key)) == 250
        await eventually(lambda: sink.replies, within_s=20)
        writer.write(b"\r\n.\r\nQUIT\r\n")
        await writer.drain()
        replies = (await asyncio.wait_for(reader.read(), 20)).decode()
        assert "250 2.0.0 OK\r\n" in replies and "queued" not in replies, replies
        big = mail("photo", "When was this photo taken?")
        big.add_attachment(bytes(range(256)) * 6000, "application", "octet-stream", filename="photo.raw")  # 2 MB
        assert await send(h, signed(big, key)) == 250
        await eventually(lambda: len(sink.replies) >= 2, within_s=30)
    finally:
        writer.close()
        await h.stop()
    assert _body(sink.replies[0]).startswith("You asked: Where is the spare key?")
    assert _body(sink.replies[1]).startswith("You asked: When was this photo taken?"), _body(sink.replies[1])


async def test_strangers_holding_every_place_keep_no_persons_mail_waiting(
    tmp_path: Path, fake_llm: FakeOpenAI, sink: Sink, seeded: HistoryIndex, dns: Any, key: DkimKey
) -> None:
    """Strangers on two addresses that start a mail and send it slowly hold every stranger's place: a third
    stranger waits, then gets 451 4.3.2; Alice's mail, her address its envelope sender, has a place of its own."""
    settings = settings_for(tmp_path, fake_llm, sink.port, max_receiving=2, busy_wait_s=0.5)
    h = await running(settings, seeded, dns)
    slow = []
    try:
        for address in ("127.0.0.2", "127.0.0.3"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port(h), local_addr=(address, 0))
            for line in ("EHLO slow", "MAIL FROM:<mallory@evil.test>", f"RCPT TO:<{CONFIDE}>", "DATA"):
                writer.write(f"{line}\r\n".encode())
            writer.write(b"From: mallory@evil.test\r\nSubject: slow\r\n\r\nand so on")
            await writer.drain()
            slow.append((reader, writer))
        began = time.perf_counter()
        assert await send(h, stranger("X-Third: yes"), sender="mallory@evil.test",
                          source_address=("127.0.0.4", 0)) == 451  # fmt: skip
        assert time.perf_counter() - began >= 0.5
        assert await send(h, signed(mail("cabin", "Where is the spare key?"), key)) == 250
        await eventually(lambda: sink.replies, within_s=20)
    finally:
        for _, writer in slow:
            writer.close()
        await h.stop()
    assert _body(sink.replies[0]).startswith("You asked: Where is the spare key?")


async def test_reading_is_bounded_in_mails_and_bytes() -> None:
    reading = Reading(max_mails=2, max_bytes=100)
    async with reading.slot(60, 0.05) as first, reading.slot(30, 0.05) as second:
        async with reading.slot(5, 0.05) as third:  # a third mail, though small
            assert (first, second, third) == (True, True, False)
    async with reading.slot(60, 0.05) as first, reading.slot(50, 0.05) as too_big:
        assert (first, too_big) == (True, False)
    async with reading.slot(10_000, 0.05) as alone:  # one mail alone always fits
        assert alone and reading.bytes == 10_000
    assert (reading.mails, reading.bytes) == (0, 0)


class FakeImap:
    """The few IMAP calls ImapReader makes, answered from one mailbox of (uid, raw)."""

    def __init__(self, mails: dict[int, bytes]) -> None:
        self.mails = mails
        self.seen: list[int] = []

    async def noop(self) -> Response:
        return Response("OK", [b"NOOP completed"])

    async def uid_search(self, criteria: str, charset: str | None = None) -> Response:
        return Response("OK", [" ".join(map(str, self.mails)).encode(), b"SEARCH completed"])

    async def uid(self, command: str, uid: str, *args: str) -> Response:
        if command == "store":
            self.seen.append(int(uid))
            return Response("OK", [b"STORE completed"])
        raw = self.mails[int(uid)]
        if args[0] == "(RFC822.SIZE)":
            return Response("OK", [f"{uid} FETCH (UID {uid} RFC822.SIZE {len(raw)})".encode(), b"FETCH completed"])
        return Response("OK", [f"{uid} FETCH (UID {uid} BODY[] {{{len(raw)}}}".encode(), bytearray(raw), b")",
                               b"FETCH completed"])  # fmt: skip


async def test_imap_skips_a_mail_that_can_never_be_read_and_moves_on(
    confide: Harness, sink: Sink, key: DkimKey, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.email")
    adapter = confide.adapter
    assert isinstance(adapter, EmailAdapter)
    state: EmailState = adapter.state  # the adapter's own tables, handed over at assembly (its IMAP is off)
    reader = ImapReader(adapter.email, state, adapter.accept)
    client = FakeImap({7: nested_mail(1000), 8: signed(mail("cabin", "Where is the spare key?"), key)})
    await reader._take_new(client, uidvalidity=1)  # type: ignore[arg-type]
    assert client.seen == [7, 8] and await state.checkpoint("INBOX") == (1, 8)
    assert "UID 7 in" in caplog.text and "can never be read" in caplog.text
    await eventually(lambda: sink.replies, within_s=20)
    assert _body(sink.replies[0]).startswith("You asked: Where is the spare key?")


# -- DATA read in pieces ------------------------------------------------------------------------------------


def _reference(stream: bytes) -> tuple[bytes, bytes]:
    """RFC 5321's reading, a line at a time: (the mail, what follows its lone "." line)."""
    lines, rest = [], stream
    while True:
        line, _, rest = rest.partition(b"\r\n")
        if line == b".":
            return b"".join(lines), rest
        lines.append((line[1:] if line.startswith(b".") else line) + b"\r\n")


@pytest.mark.parametrize("seed", range(6))
async def test_data_is_read_in_pieces_as_rfc_5321_reads_it_line_by_line(seed: int) -> None:
    rng = random.Random(seed)
    pieces = [b".", b"..", b"x" * 3000, b"a", b"\r", b" ", b"", b".\r"]  # no CRLF inside a line
    lines = [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(0, 300))]
    if rng.random() < 0.3:
        lines.append(b"y" * (2 << 20))  # longer than a piece
    # As a client sends it: a line starting with "." gets one more (so no line of the mail is a lone ".").
    stream = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    stream += b".\r\nQUIT\r\n"
    reader = asyncio.StreamReader(limit=1001)

    async def feed() -> None:
        at = 0
        while at < len(stream):
            step = rng.choice([1, 2, 3, 5, 64, 4096, 1 << 20])
            reader.feed_data(stream[at : at + step])
            at += step
            await asyncio.sleep(0)

    feeding = asyncio.create_task(feed())
    received = await read_data(reader, 64 << 20)
    await feeding
    expected, rest = _reference(stream)
    assert received == expected == b"".join(line + b"\r\n" for line in lines)
    assert await reader.read(len(rest)) == rest == b"QUIT\r\n", "read past the end of the mail"


async def test_data_over_the_limit_is_read_to_its_end_and_refused() -> None:
    reader = asyncio.StreamReader(limit=1001)
    reader.feed_data(b"x" * 5000 + b"\r\n" + b"y\r\n" * 2000 + b".\r\nNOOP\r\n")
    assert await read_data(reader, 4096) == TOO_MUCH
    assert await reader.readuntil(b"\r\n") == b"NOOP\r\n"
    reader = asyncio.StreamReader(limit=1001)
    reader.feed_data(b"cut off\r\n")
    reader.feed_eof()
    assert await read_data(reader, 4096) is None
