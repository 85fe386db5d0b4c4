"""The email adapter against real Postfix and Dovecot on loopback, with the whole bridge in-process.

SMTP mode: a person's mail goes through Postfix to Confide's SMTP server (STARTTLS), the answer goes out
through Postfix (STARTTLS + AUTH) into the person's Dovecot mailbox, and is read back over IMAP.
IMAP mode: mail delivered into Confide's own Dovecot mailbox is read over IMAP (plain, and implicit TLS verified
against `ca_file`) and answered once; an untrusted server certificate stops the reader before it logs in.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
import uuid
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim
import pytest
from aioimaplib import IMAP4

from adapters.email.adapter import EmailAdapter
from adapters.email.settings import EmailSettings
from adapters.email.smtp_server import Outcome, serve_smtp
from bridge.config import PersonSettings, Settings, TranscriberSettings
from bridge.history.index import HistoryIndex
from bridge.intake.hearing import Hearing
from bridge.messages import HistoryRecord, utcnow
from bridge.models.transcriber import OpenAITranscriber
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.harness import Harness
from tests.helpers import eventually, make_settings, model_for
from tests.mailservers import (
    CONFIDE_DOMAIN,
    IMAP_DOMAIN,
    PASSWORD,
    PEOPLE_DOMAIN,
    DkimKey,
    MailServers,
    free_port,
    self_signed_cert,
)

CONFIDE = f"confide@{CONFIDE_DOMAIN}"
SELECTOR = b"s1"


@pytest.fixture(scope="session")
async def servers() -> AsyncIterator[MailServers]:
    mail = await MailServers().start()
    yield mail
    await mail.stop()


@pytest.fixture(scope="session")
def keys(servers: MailServers) -> dict[str, DkimKey]:
    """DKIM keys of the people's domain and of an attacker's own domain."""
    return {PEOPLE_DOMAIN: DkimKey.generate(servers.root), "evil.test": _second_key(servers.root)}


def _second_key(root: Path) -> DkimKey:
    folder = root / "evil"
    folder.mkdir(exist_ok=True)
    return DkimKey.generate(folder)


@pytest.fixture
def dns(keys: dict[str, DkimKey]) -> Any:
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        for domain, key in keys.items():
            if name.decode().rstrip(".") == f"{SELECTOR.decode()}._domainkey.{domain}":
                return key.txt_record
        return None

    return lookup


@pytest.fixture
def alice() -> str:
    """A fresh mailbox per test, so no test sees another's late mail."""
    return f"alice-{uuid.uuid4().hex[:8]}@{PEOPLE_DOMAIN}"


@pytest.fixture
async def seeded(history: HistoryIndex) -> HistoryIndex:
    when = utcnow()
    await history.add("alice", [
        HistoryRecord(id="n1", person="alice", channel="whatsapp", conversation="Family", author="Anna", time=when,
                      text="The spare key for the cabin is under the blue flower pot.", source="whatsapp:family.zip"),
    ])  # fmt: skip
    return history


def settings_for(tmp_path: Path, servers: MailServers, llm: FakeOpenAI, alice: str, **email: Any) -> Settings:
    values: dict[str, Any] = {
        "smtp_enabled": True,
        "smtp_port": servers.confide_port,
        "addresses": [CONFIDE],
        "tls_cert": servers.cert,
        "tls_key": servers.key,
        "relay_host": "127.0.0.1",
        "relay_port": servers.smtp_port,
        "relay_security": "starttls",
        "relay_user": f"relay@{PEOPLE_DOMAIN}",
        "relay_password": PASSWORD,
        "ca_file": servers.cert,
        "from_address": CONFIDE,
    }
    values.update(email)
    persons = [PersonSettings(id="alice", name="Alice", accounts=[f"email:{alice}"])]
    return make_settings(tmp_path, {"main": model_for(llm)}, persons=persons, email=EmailSettings(**values))


async def started(settings: Settings, history: HistoryIndex, dns: Any) -> Harness:
    adapter = EmailAdapter(settings, dnsfunc=dns)
    harness = await Harness(settings, history, adapter).start()  # type: ignore[arg-type]
    if settings.email.smtp_enabled:
        await asyncio.wait_for(adapter.smtp_started.wait(), 10)
    return harness


def mail(subject: str, body: str, sender: str, to: str = CONFIDE, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = make_msgid(domain=sender.partition("@")[2])
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def signed(msg: EmailMessage, key: DkimKey, domain: str = PEOPLE_DOMAIN) -> bytes:
    raw = msg.as_bytes(policy=policy.SMTP)
    # What a command's authority needs signed (adapters/email/auth.py): the body's framing headers too.
    headers = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"In-Reply-To", b"References", b"MIME-Version",
               b"Content-Type", b"Content-Transfer-Encoding"]  # fmt: skip
    return dkim.sign(raw, SELECTOR, domain.encode(), key.private_pem, include_headers=headers) + raw


async def via_postfix(servers: MailServers, raw: bytes, sender: str, to: str = CONFIDE) -> None:
    tls = ssl.create_default_context(cafile=str(servers.cert))
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=servers.smtp_port, tls_context=tls) as client:
        await client.sendmail(sender, [to], raw)  # sender "" is a bounce's null sender


class Mailbox:
    """A person's Dovecot mailbox, read over IMAP on one connection."""

    def __init__(self, servers: MailServers, address: str) -> None:
        self.servers, self.address = servers, address
        self.client: IMAP4 | None = None

    async def __aenter__(self) -> Mailbox:
        self.client = IMAP4("127.0.0.1", self.servers.imap_port, timeout=10)
        await self.client.wait_hello_from_server()
        assert (await self.client.login(self.address, PASSWORD)).result == "OK"
        assert (await self.client.select("INBOX")).result == "OK"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.client is not None
        await self.client.logout()

    async def messages(self, criteria: str = "ALL") -> list[EmailMessage]:
        assert self.client is not None
        await self.client.noop()
        found = await self.client.uid_search(criteria, charset=None)
        uids = [word for line in found.lines[:-1] for word in bytes(line).split() if word.isdigit()]
        result = []
        for uid in uids:
            fetched = await self.client.uid("fetch", uid.decode(), "(BODY.PEEK[])")
            raw = next(bytes(x) for x in fetched.lines if isinstance(x, bytearray))
            result.append(BytesParser(policy=policy.default).parsebytes(raw))
        return result  # type: ignore[return-value]

    async def has(self, count: int) -> bool:
        return len(await self.messages()) >= count


def body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return part.get_content().replace("\r\n", "\n")


async def stored(h: Harness) -> int:
    def count(conn: Any) -> int:
        return conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]

    assert h.db is not None
    return await h.db.run(count)


async def answered_in(box: Mailbox, count: int) -> list[EmailMessage]:
    await eventually(lambda: box.has(count), within_s=20)
    return await box.messages()


async def the_reply(
    settings: Settings, history: HistoryIndex, dns: Any, servers: MailServers, raw: bytes, sender: str
) -> EmailMessage:
    """One signed mail through Postfix to a running Confide, and the one reply in the sender's mailbox."""
    h = await started(settings, history, dns)
    try:
        async with Mailbox(servers, sender) as box:
            await via_postfix(servers, raw, sender)
            [reply] = await answered_in(box, 1)
    finally:
        await h.stop()
    return reply


# -- SMTP mode --------------------------------------------------------------------------------------


async def test_smtp_mode_answers_through_postfix_into_the_persons_mailbox(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, seeded: HistoryIndex,
    fake_llm: FakeOpenAI, alice: str,
) -> None:  # fmt: skip
    question = mail(
        "cabin key",
        "Where is the spare key for the cabin?\n\nOn Mon, 1 Jan 2024 at 10:00, Confide wrote:\n"
        "> The wifi password is hunter2.\n\n-- \nAlice",
        alice,
    )
    settings = settings_for(tmp_path, servers, fake_llm, alice)
    reply = await the_reply(settings, seeded, dns, servers, signed(question, keys[PEOPLE_DOMAIN]), alice)
    assert reply["Subject"] == "Re: cabin key"
    assert reply["From"] == CONFIDE and reply["To"] == alice
    assert reply["In-Reply-To"] == question["Message-ID"] and question["Message-ID"] in reply["References"]
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Message-ID"].startswith("<confide.") and reply["Message-ID"].endswith(f"@{CONFIDE_DOMAIN}>")
    text = body(reply)
    assert text.startswith("You asked: Where is the spare key for the cabin? The spare key")
    assert "Sources:\n[1]" in text and "whatsapp:family.zip" in text
    assert "wrote:\n> Where is the spare key for the cabin?" in text
    asked = fake_llm.requests[0]["messages"][-1]["content"]
    assert "hunter2" not in asked, "the quoted history was taken as the question"
    assert f"relay=127.0.0.1[127.0.0.1]:{servers.confide_port}" in servers.log()
    assert "TLS connection established to 127.0.0.1" in servers.log(), "Postfix did not use Confide's STARTTLS"


async def test_spoofed_unsigned_and_automatic_mail_get_no_answer_and_leave_no_data(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, history: HistoryIndex,
    fake_llm: FakeOpenAI, caplog: pytest.LogCaptureFixture, alice: str,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="adapters.email")
    own, evil = keys[PEOPLE_DOMAIN], keys["evil.test"]
    forged = f"evil.test; dmarc=pass header.from={PEOPLE_DOMAIN}"
    tampered = signed(mail("q", "What is my locker code?", alice), own).replace(b"locker code", b"bank PIN!!!")
    refused: dict[str, tuple[bytes, str]] = {
        "signed by another domain": (signed(mail("q", "locker code?", alice), evil, "evil.test"), alice),
        "body changed after signing": (tampered, alice),
        "unsigned": (mail("q", "locker code?", alice).as_bytes(), alice),
        "untrusted Authentication-Results": (mail("q", "x?", alice, Authentication_Results=forged).as_bytes(), alice),
        "bounce": (signed(mail("Undelivered", "failed", f"MAILER-DAEMON@{PEOPLE_DOMAIN}"), own), ""),
        "auto-reply": (signed(mail("Out of office", "away", alice, Auto_Submitted="auto-replied"), own), alice),
        "mailing list": (signed(mail("[list] hi", "hello all", alice, List_Id="<family.example.test>"), own), alice),
        "bulk": (signed(mail("news", "sale", alice, Precedence="bulk"), own), alice),
        "own address": (mail("loop", "hi", CONFIDE).as_bytes(), CONFIDE),
    }
    report = mail("Delivery report", "", alice)
    report.make_mixed()
    report.replace_header("Content-Type", 'multipart/report; report-type="delivery-status"; boundary="b"')
    refused["report"] = (signed(report, own), alice)
    settings = settings_for(tmp_path, servers, fake_llm, alice, trusted_authserv_ids=["mx.test"])
    h = await started(settings, history, dns)
    try:
        async with Mailbox(servers, alice) as box:
            for raw, sender in refused.values():
                await via_postfix(servers, raw, sender=sender)
            # Every refused mail reached Confide and was dropped (its Message-ID is in the log) ...
            ids = [BytesParser(policy=policy.default).parsebytes(raw)["Message-ID"] for raw, _ in refused.values()]
            await eventually(lambda: all(i.strip("<>") in caplog.text for i in ids), within_s=20)
            # ... and a genuine mail sent after them is the only one answered.
            await via_postfix(servers, signed(mail("q", "/help", alice), own), alice)
            replies = await answered_in(box, 1)
            assert await stored(h) == 1, "a refused mail was stored"
    finally:
        await h.stop()
    assert len(replies) == 1 and "I answer questions" in body(replies[0])
    assert fake_llm.requests == []
    assert caplog.text.count("not authenticated") == 4
    for reason in ("null envelope sender", "Auto-Submitted", "List-Id", "Precedence: bulk", "multipart/report"):
        assert reason in caplog.text
    assert "own address" in caplog.text or "own message" in caplog.text
    assert "locker" not in caplog.text, "mail content reached the log"


async def test_authentication_results_that_came_with_the_mail_are_never_believed(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, seeded: HistoryIndex,
    fake_llm: FakeOpenAI, caplog: pytest.LogCaptureFixture, alice: str,
) -> None:  # fmt: skip
    """Confide is the receiving MTA: a header naming the trusted MTA, written by the sender, is ignored, whether
    sent straight to Confide's port or through Postfix (no trusted relay is configured), in any spelling."""
    caplog.set_level(logging.INFO, logger="adapters.email")
    settings = settings_for(tmp_path, servers, fake_llm, alice, trusted_authserv_ids=["mx.test"])
    forgeries = [
        f"mx.test; dmarc=pass header.from={PEOPLE_DOMAIN}",
        f"MX.Test (trusted, honest); DMARC=Pass header.from={PEOPLE_DOMAIN.upper()}",
        f"mx.test; dkim=pass header.d={PEOPLE_DOMAIN}; spf=pass smtp.mailfrom={alice}",
    ]
    direct = {"sender": alice, "recipients": [CONFIDE], "hostname": "127.0.0.1", "port": servers.confide_port}
    h = await started(settings, seeded, dns)
    try:
        async with Mailbox(servers, alice) as box:
            sent = []
            for n, forged in enumerate(forgeries):
                for route in ("direct", "postfix"):
                    forged_mail = mail(f"forged {n}", "/forget all", alice, Authentication_Results=forged)
                    if route == "direct":
                        await aiosmtplib.send(forged_mail.as_bytes(), start_tls=False, **direct)
                    else:
                        await via_postfix(servers, forged_mail.as_bytes(), alice)
                    sent.append(forged_mail["Message-ID"].strip("<>"))
            await eventually(lambda: all(f"{i} claiming" in caplog.text for i in sent), within_s=20)
            await via_postfix(servers, signed(mail("genuine", "/help", alice), keys[PEOPLE_DOMAIN]), alice)
            replies = await answered_in(box, 1)
            assert await stored(h) == 1, "a forged mail was stored"
    finally:
        await h.stop()
    assert [r["Subject"] for r in replies] == ["Re: genuine"]
    assert await seeded.count("alice") == 1


async def test_changing_a_history_by_mail_needs_a_sender_confide_proves(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, seeded: HistoryIndex,
    fake_llm: FakeOpenAI, alice: str,
) -> None:  # fmt: skip
    """Behind a trusted relay, its Authentication-Results vouch for a sender: enough for a question, not for
    /forget or for confirming one; only the topmost header of its id counts. A DKIM signature proves the sender."""
    settings = settings_for(tmp_path, servers, fake_llm, alice, trusted_authserv_ids=["mx.test"],
                            trusted_relays=["127.0.0.1/32"])  # fmt: skip
    vouched = f"mx.test; dmarc=pass header.from={PEOPLE_DOMAIN}"
    own = keys[PEOPLE_DOMAIN]
    h = await started(settings, seeded, dns)
    try:
        async with Mailbox(servers, alice) as box:
            await via_postfix(servers, mail("tidy", "/forget all", alice, Authentication_Results=vouched).as_bytes(),
                              alice)  # fmt: skip
            [refused] = await answered_in(box, 1)
            first = mail("tidy up", "/forget all", alice)
            await via_postfix(servers, signed(first, own), alice)
            asked = (await answered_in(box, 2))[-1]
            thread = {"In_Reply_To": first["Message-ID"], "References": first["Message-ID"]}
            await via_postfix(servers, mail("Re: tidy up", "yes", alice, Authentication_Results=vouched,
                                            **thread).as_bytes(), alice)  # fmt: skip
            refused_yes = (await answered_in(box, 3))[-1]
            # Two headers of the trusted id: the topmost (the relay's) says fail; the pass below came with the mail.
            duplicated = mail("Re: tidy up", "yes", alice, **thread)
            duplicated["Authentication-Results"] = f"mx.test; dmarc=fail header.from={PEOPLE_DOMAIN}"
            duplicated["Authentication-Results"] = vouched
            await via_postfix(servers, duplicated.as_bytes(), alice)
            assert await seeded.count("alice") == 1
            await via_postfix(servers, signed(mail("Re: tidy up", "yes", alice, **thread), own), alice)
            done = (await answered_in(box, 4))[-1]
            assert await stored(h) == 4, "the mail with the duplicated header was stored"
    finally:
        await h.stop()
    assert "changes your history" in body(refused) and "DKIM" in body(refused)
    assert "yes" in body(asked) and "Confirming changes your history" in body(refused_yes)
    assert done["Subject"] == "Re: tidy up" and await seeded.count("alice") == 0, body(done)


async def test_html_only_and_non_utf8_mail_is_read_as_text(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, history: HistoryIndex,
    fake_llm: FakeOpenAI, alice: str,
) -> None:  # fmt: skip
    html = mail("dinner", "", alice)
    html.set_content("<html><body><p>When is <b>grandma's</b> dinner?</p></body></html>", subtype="html")
    latin = mail("Essen", "", alice)
    latin.set_content("Wann ist das Geburtstagsessen für Oma?".encode("iso-8859-1"), "text", "plain",
                      cte="quoted-printable", params={"charset": "iso-8859-1"})  # fmt: skip
    japanese = mail("鍵", "", alice)
    japanese.set_content("小屋の鍵はどこですか？".encode("shift_jis"), "text", "plain", cte="base64",
                         params={"charset": "shift_jis"})  # fmt: skip
    h = await started(settings_for(tmp_path, servers, fake_llm, alice), history, dns)
    try:
        async with Mailbox(servers, alice) as box:
            for msg in (html, latin, japanese):
                await via_postfix(servers, signed(msg, keys[PEOPLE_DOMAIN]), alice)
            replies = await answered_in(box, 3)
    finally:
        await h.stop()
    texts = [body(r) for r in replies]
    for asked in ("When is grandma's dinner?", "Wann ist das Geburtstagsessen für Oma?", "小屋の鍵はどこですか？"):
        assert sum(text.startswith(f"You asked: {asked}") for text in texts) == 1, (asked, texts)
    assert {r["Subject"] for r in replies} == {"Re: dinner", "Re: Essen", "Re: 鍵"}


async def test_smtp_server_rules_unknown_recipient_size_limit_auth_and_rate_cap(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, history: HistoryIndex,
    fake_llm: FakeOpenAI, alice: str,
) -> None:  # fmt: skip
    settings = settings_for(
        tmp_path, servers, fake_llm, alice, max_message_bytes=64 * 1024, rate_limit_per_hour=2,
        auth_users={"mx": "mx-secret"}, smtp_port=free_port(),
    )  # fmt: skip
    port = settings.email.smtp_port
    tls = ssl.create_default_context(cafile=str(servers.cert))
    h = await started(settings, history, dns)
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as plain:
            await plain.ehlo()
            assert "auth" not in plain.esmtp_extensions, "AUTH offered without TLS"
            assert plain.esmtp_extensions["size"] == str(64 * 1024)
            await plain.mail(alice)
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await plain.rcpt(f"someone@{CONFIDE_DOMAIN}")
            assert refused.value.code == 550
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True, tls_context=tls) as client:
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await client.login("mx", "wrong")
            await client.login("mx", "mx-secret")
            huge = mail("huge", "x" * 200_000, alice)
            with pytest.raises(aiosmtplib.SMTPResponseException) as too_big:
                await client.sendmail(alice, [CONFIDE], signed(huge, keys[PEOPLE_DOMAIN]))
            assert too_big.value.code == 552
        assert await stored(h) == 0, "a mail over the size limit was stored"
        codes = []
        for n in range(3):
            raw = signed(mail(f"q{n}", f"question {n}?", alice), keys[PEOPLE_DOMAIN])
            try:
                await aiosmtplib.send(raw, sender=alice, recipients=[CONFIDE], hostname="127.0.0.1", port=port,
                                      start_tls=False)  # fmt: skip
                codes.append(250)
            except aiosmtplib.SMTPResponseException as exc:
                codes.append(exc.code)
        assert codes == [250, 250, 451]
        assert await stored(h) == 2
    finally:
        await h.stop()


async def test_implicit_tls_server_offers_auth_and_takes_mail(servers: MailServers, alice: str) -> None:
    settings = EmailSettings(
        smtp_enabled=True, smtp_port=free_port(), addresses=[CONFIDE], tls_cert=servers.cert, tls_key=servers.key,
        implicit_tls=True, auth_required=True, auth_users={"mx": "mx-secret"}, relay_host="127.0.0.1",
        from_address=CONFIDE,
    )  # fmt: skip
    taken: list[bytes] = []

    async def accept(raw: bytes, envelope_sender: str | None, peer: str | None) -> Outcome:
        taken.append(raw)
        return Outcome.STORED

    ready = asyncio.Event()
    server = asyncio.create_task(serve_smtp(settings, accept, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        tls = ssl.create_default_context(cafile=str(servers.cert))
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=settings.smtp_port, use_tls=True, tls_context=tls) as c:
            with pytest.raises(aiosmtplib.SMTPResponseException) as unauthenticated:
                await c.sendmail(alice, [CONFIDE], b"Subject: x\r\n\r\nx\r\n")
            assert unauthenticated.value.code == 530
            await c.login("mx", "mx-secret")
            await c.sendmail(alice, [CONFIDE], b"Subject: x\r\n\r\nhello\r\n")
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    assert len(taken) == 1 and taken[0].endswith(b"hello\r\n")


async def test_a_stopping_server_defers_mail_with_421(servers: MailServers, alice: str) -> None:
    """During a graceful stop the sending MTA keeps the mail and retries: nothing is taken that would wait."""
    settings = EmailSettings(smtp_enabled=True, smtp_port=free_port(), addresses=[CONFIDE], relay_host="127.0.0.1",
                             from_address=CONFIDE)  # fmt: skip
    taken: list[bytes] = []
    accepting = True

    async def accept(raw: bytes, envelope_sender: str | None, peer: str | None) -> Outcome:
        taken.append(raw)
        return Outcome.STORED

    ready = asyncio.Event()
    server = asyncio.create_task(serve_smtp(settings, accept, ready, lambda: accepting))
    send = {"sender": alice, "recipients": [CONFIDE], "hostname": "127.0.0.1", "port": settings.smtp_port,
            "start_tls": False}  # fmt: skip
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await aiosmtplib.send(b"Subject: x\r\n\r\nbefore\r\n", **send)
        accepting = False
        with pytest.raises(aiosmtplib.SMTPResponseException) as deferred:
            await aiosmtplib.send(b"Subject: x\r\n\r\nduring the stop\r\n", **send)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    assert deferred.value.code == 421
    assert len(taken) == 1 and taken[0].endswith(b"before\r\n")


async def test_crash_after_250_is_answered_exactly_once_after_restart(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, history: HistoryIndex,
    fake_llm: FakeOpenAI, alice: str,
) -> None:  # fmt: skip
    # The first answer hangs (long enough: the process dies right after the model was asked; longer would
    # only delay the fake server's shutdown, which waits for its handlers).
    fake_llm.script = [Behaviour(delay_s=3)]
    settings = settings_for(tmp_path, servers, fake_llm, alice)
    raw = signed(mail("key", "Where is the cabin key?", alice), keys[PEOPLE_DOMAIN])
    send = {"sender": alice, "recipients": [CONFIDE], "hostname": "127.0.0.1", "port": servers.confide_port}
    async with Mailbox(servers, alice) as box:
        h = await started(settings, history, dns)
        try:
            _, response = await aiosmtplib.send(raw, start_tls=False, **send)
            assert response.startswith("2.0.0 OK: queued")
            await eventually(lambda: fake_llm.requests)
        finally:
            await h.stop()
        assert await box.messages() == []

        h = await started(settings, history, dns)
        try:
            # The sending MTA may not have seen the 250 and delivers again: still one mail.
            _, response = await aiosmtplib.send(raw, start_tls=False, **send)
            assert response.startswith("2.0.0 OK: already queued")
            [reply] = await answered_in(box, 1)
            # A later mail's answer arrives after any duplicate of the first would have.
            await aiosmtplib.send(signed(mail("later", "/help", alice), keys[PEOPLE_DOMAIN]), start_tls=False, **send)
            replies = await answered_in(box, 2)
        finally:
            await h.stop()
    assert body(reply).startswith("You asked: Where is the cabin key?")
    assert [r["Subject"] for r in replies] == ["Re: key", "Re: later"]
    assert len(fake_llm.requests) == 2


async def test_import_subject_saves_attachments_and_runs_the_import_command(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, history: HistoryIndex,
    fake_llm: FakeOpenAI, alice: str,
) -> None:  # fmt: skip
    msg = mail("[import] my notes", "Please import these.", alice)
    msg.add_attachment(b"# Cabin\nThe spare key is under the blue flower pot.\n", "text", "markdown",
                       filename="../../cabin.md")  # fmt: skip
    settings = settings_for(tmp_path, servers, fake_llm, alice)
    reply = await the_reply(settings, history, dns, servers, signed(msg, keys[PEOPLE_DOMAIN]), alice)
    [saved] = list((tmp_path / "attachments" / "email").rglob("*cabin.md"))
    assert saved.read_bytes().startswith(b"# Cabin") and saved.name == "01-cabin.md"
    assert body(reply).startswith("Imported "), body(reply)


# -- IMAP mode --------------------------------------------------------------------------------------


async def test_imap_mode_answers_each_mail_once_across_restarts(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, history: HistoryIndex,
    fake_llm: FakeOpenAI, alice: str,
) -> None:  # fmt: skip
    box_address = f"confide-{uuid.uuid4().hex[:8]}@{IMAP_DOMAIN}"
    settings = settings_for(
        tmp_path, servers, fake_llm, alice, smtp_enabled=False, addresses=[], imap_enabled=True, imap_host="127.0.0.1",
        imap_port=servers.imap_port, imap_tls=False, imap_user=box_address, imap_password=PASSWORD,
        imap_poll_interval_s=30, from_address=box_address, trusted_authserv_ids=["mx.test"],
    )  # fmt: skip
    vouched = mail("vouched", "First question?", alice, to=box_address,
                   Authentication_Results=f"mx.test; dkim=pass header.d={PEOPLE_DOMAIN}; spf=fail")  # fmt: skip
    async with Mailbox(servers, alice) as box, Mailbox(servers, box_address) as confide_box:
        # Waiting before Confide starts: taken on start-up.
        await via_postfix(servers, vouched.as_bytes(), alice, to=box_address)
        await eventually(lambda: confide_box.has(1))
        h = await started(settings, history, dns)
        try:
            await answered_in(box, 1)
            # Arriving while Confide idles: IDLE announces it.
            second = mail("second", "Second question?", alice, to=box_address)
            await via_postfix(servers, signed(second, keys[PEOPLE_DOMAIN]), alice, to=box_address)
            await answered_in(box, 2)
            assert await confide_box.messages("UNSEEN") == [], "an answered mail was left unseen"
        finally:
            await h.stop()
        # A restart reads from the checkpoint: nothing is answered twice, new mail is.
        h = await started(settings, history, dns)
        try:
            third = mail("third", "Third question?", alice, to=box_address)
            await via_postfix(servers, signed(third, keys[PEOPLE_DOMAIN]), alice, to=box_address)
            replies = await answered_in(box, 3)
        finally:
            await h.stop()
    assert sorted(r["Subject"] for r in replies) == ["Re: second", "Re: third", "Re: vouched"]
    assert all(r["From"] == box_address for r in replies)
    assert len(fake_llm.requests) == 3


# -- IMAP mode over TLS -----------------------------------------------------------------------------


def imap_tls_settings(
    tmp_path: Path, servers: MailServers, llm: FakeOpenAI, alice: str, box: str, **email: Any
) -> Settings:
    """IMAP mode against Dovecot's implicit-TLS listener (`ca_file` is the servers' own CA unless overridden)."""
    return settings_for(
        tmp_path, servers, llm, alice, smtp_enabled=False, addresses=[], imap_enabled=True, imap_host="127.0.0.1",
        imap_port=servers.imaps_port, imap_tls=True, imap_user=box, imap_password=PASSWORD, imap_poll_interval_s=30,
        from_address=box, **email,
    )  # fmt: skip


def logins(servers: MailServers, user: str) -> list[str]:
    """Dovecot's log lines of `user`'s IMAP logins."""
    return [
        line for line in servers.log().splitlines() if "imap-login: Info: Login: " in line and f"user=<{user}>" in line
    ]


async def test_imap_mode_over_tls_answers_each_mail_once(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, history: HistoryIndex,
    fake_llm: FakeOpenAI, alice: str,
) -> None:  # fmt: skip
    box_address = f"confide-{uuid.uuid4().hex[:8]}@{IMAP_DOMAIN}"
    settings = imap_tls_settings(tmp_path, servers, fake_llm, alice, box_address)
    assert settings.email.ca_file == servers.cert
    async with Mailbox(servers, alice) as box, Mailbox(servers, box_address) as confide_box:
        # Waiting before Confide starts: taken on start-up.
        first = mail("over tls", "First question?", alice, to=box_address)
        await via_postfix(servers, signed(first, keys[PEOPLE_DOMAIN]), alice, to=box_address)
        await eventually(lambda: confide_box.has(1))
        h = await started(settings, history, dns)
        try:
            await answered_in(box, 1)
            # Arriving while Confide idles on the TLS connection: IDLE announces it, and the first mail's
            # duplicate, were there one, would have arrived before this answer.
            second = mail("still tls", "Second question?", alice, to=box_address)
            await via_postfix(servers, signed(second, keys[PEOPLE_DOMAIN]), alice, to=box_address)
            replies = await answered_in(box, 2)
            assert await confide_box.messages("UNSEEN") == [], "an answered mail was left unseen"
            assert await stored(h) == 2
        finally:
            await h.stop()
    assert [r["Subject"] for r in replies] == ["Re: over tls", "Re: still tls"]
    assert all(r["From"] == box_address for r in replies)
    assert len(fake_llm.requests) == 2
    # The test's own Mailbox logged in over plain IMAP; Confide once, over TLS.
    assert [", TLS, " in line for line in logins(servers, box_address)] == [False, True], servers.log()


@pytest.mark.parametrize("ca", ["another CA", "system CAs"])
async def test_imap_mode_over_tls_refuses_an_untrusted_certificate(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, history: HistoryIndex,
    fake_llm: FakeOpenAI, caplog: pytest.LogCaptureFixture, alice: str, ca: str,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="adapters.email")
    box_address = f"confide-{uuid.uuid4().hex[:8]}@{IMAP_DOMAIN}"
    other_ca = None
    if ca == "another CA":
        (tmp_path / "other-ca").mkdir()
        other_ca, _ = self_signed_cert(tmp_path / "other-ca")  # same subject and names, different key
    settings = imap_tls_settings(tmp_path, servers, fake_llm, alice, box_address, ca_file=other_ca)
    async with Mailbox(servers, box_address) as confide_box:
        await via_postfix(servers, signed(mail("q", "Question?", alice, to=box_address), keys[PEOPLE_DOMAIN]), alice,
                          to=box_address)  # fmt: skip
        await eventually(lambda: confide_box.has(1))
        h = await started(settings, history, dns)
        try:
            where = f"127.0.0.1:{servers.imaps_port}"
            # Refused, and refused again on the retry: no fallback to plain text or to an unverified connection.
            await eventually(lambda: caplog.text.count("certificate verify failed") >= 2)
            assert await stored(h) == 0, "mail was read over an unverified connection"
            assert len(await confide_box.messages("UNSEEN")) == 1
        finally:
            await h.stop()
    assert fake_llm.requests == []
    # Only the test's own Mailbox logged in (over plain IMAP): Confide never sent its password.
    assert [", TLS, " in line for line in logins(servers, box_address)] == [False], servers.log()
    [record] = {r.getMessage() for r in caplog.records if "certificate verify failed" in r.getMessage()}
    assert where in record and box_address in record, record


async def test_compare_by_mail_shows_its_chart_inline(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, history: HistoryIndex,
    fake_llm: FakeOpenAI, alice: str,
) -> None:  # fmt: skip
    other = await FakeOpenAI(model="other-model", answer=lambda m: "The key is under the pot [1]").start()
    settings = settings_for(tmp_path, servers, fake_llm, alice)
    settings = settings.model_copy(update={"models": {**settings.models, "other": model_for(other)}})
    raw = signed(mail("compare main other", "Where is the spare key?", alice), keys[PEOPLE_DOMAIN])
    try:
        reply = await the_reply(settings, history, dns, servers, raw, alice)
    finally:
        await other.stop()
    assert body(reply).startswith("Comparing main and other on: “Where is the spare key?”")
    page = reply.get_body(preferencelist=("html",))
    assert page is not None and reply.get_content_type() == "multipart/alternative"
    [picture] = [part for part in reply.walk() if part.get_content_type() == "image/png"]
    cid = str(picture["Content-ID"]).strip("<>")
    assert f'src="cid:{cid}"' in page.get_content(), "the HTML does not show the chart"
    assert picture.get_content_disposition() == "inline"
    png = picture.get_content()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and struct.unpack(">II", png[16:24]) == (800, 450)


async def test_a_voice_message_by_mail_is_heard_and_answered(
    tmp_path: Path, servers: MailServers, keys: dict[str, DkimKey], dns: Any, history: HistoryIndex,
    fake_llm: FakeOpenAI, alice: str,
) -> None:  # fmt: skip
    transcriber = TranscriberSettings(backend="openai", base_url=fake_llm.base_url, model=fake_llm.model)
    settings = settings_for(tmp_path, servers, fake_llm, alice).model_copy(update={"transcriber": transcriber})
    voice = mail("Voice message", "", alice)
    voice.add_attachment(b"SPEECH:When is grandma's dinner?", maintype="audio", subtype="ogg", filename="voice.ogg")
    hearing = Hearing(OpenAITranscriber(transcriber), transcriber.max_audio_bytes)
    adapter = EmailAdapter(settings, dnsfunc=dns)
    try:
        async with Harness(settings, history, adapter, hearing=hearing), Mailbox(servers, alice) as box:  # type: ignore[arg-type]
            await asyncio.wait_for(adapter.smtp_started.wait(), 10)
            await via_postfix(servers, signed(voice, keys[PEOPLE_DOMAIN]), alice)
            [reply] = await answered_in(box, 1)
    finally:
        await hearing.transcriber.close()
    assert body(reply).startswith("🎤 “When is grandma's dinner?”\n\nYou asked: When is grandma's dinner?")
    assert [t["name"] for t in fake_llm.transcriptions] == ["voice.ogg"]
