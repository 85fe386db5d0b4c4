"""The email adapter's pure rules, table-tested: who vouches for a sender, what is a loop, names, subjects."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from adapters.attachments import safe_name
from adapters.email.adapter import EmailAdapter
from adapters.email.auth import aligned, parse_authentication_results, trusted_results
from adapters.email.loops import RateLimit, loop_reason
from adapters.email.mime import unreadable
from adapters.email.sender import build_reply, message_id_for
from adapters.email.settings import EmailSettings
from bridge.cli import build_platform_adapters
from bridge.messages import Citation, OutgoingReply
from tests.helpers import make_settings
from tests.mailservers import free_port

OWN = {"confide@confide.test"}


def parsed(headers: str, body: str = "hi") -> EmailMessage:
    raw = (headers.strip() + "\n\n" + body).replace("\n", "\r\n").encode()
    return BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[return-value]


def test_authentication_results_are_parsed_with_comments_and_properties() -> None:
    value = (
        "mx.test (Postfix 3.7); dkim=pass (2048-bit key) header.d=example.test header.s=s1; spf=fail smtp.mailfrom=x@y"
    )
    authserv_id, results = parse_authentication_results(value)
    assert authserv_id == "mx.test"
    assert results == [
        ("dkim", "pass", {"header.d": "example.test", "header.s": "s1"}),
        ("spf", "fail", {"smtp.mailfrom": "x@y"}),
    ]


@pytest.mark.parametrize(
    ("header", "vouched"),
    [
        ("mx.test; dkim=pass header.d=example.test", True),
        ("mx.test; dkim=pass header.i=@mail.example.test", False),  # a subdomain does not vouch for its parent
        ("mx.test; dkim=pass header.d=other.test", False),
        ("mx.test; dkim=fail header.d=example.test", False),
        ("mx.test; dmarc=pass header.from=example.test", True),
        ("mx.test; spf=pass smtp.mailfrom=alice@example.test", True),
        ("mx.test; spf=pass smtp.helo=example.test", False),
        ("evil.test; dmarc=pass header.from=example.test", False),  # not a trusted MTA
        ("MX.TEST; dkim=pass header.d=EXAMPLE.test", True),
    ],
)
def test_only_a_trusted_mta_vouches_and_only_for_the_from_domain(header: str, vouched: bool) -> None:
    msg = parsed(f"From: alice@example.test\nAuthentication-Results: {header}")
    assert (trusted_results(msg, "example.test", ["mx.test"]) is not None) is vouched


@pytest.mark.parametrize(
    ("headers", "vouched"),
    [
        # The trusted MTA's own header is the topmost of its id; a pass further down came with the mail.
        ("Authentication-Results: mx.test; dmarc=fail header.from=example.test\n"
         "Authentication-Results: mx.test; dmarc=pass header.from=example.test", False),
        ("Authentication-Results: mx.test; dmarc=pass header.from=example.test\n"
         "Authentication-Results: mx.test; dmarc=fail header.from=example.test", True),
        # An untrusted id above is skipped, not taken as the topmost trusted one.
        ("Authentication-Results: evil.test; dmarc=pass header.from=example.test\n"
         "Authentication-Results: mx.test; spf=fail smtp.mailfrom=alice@example.test", False),
        ("authentication-results: Mx.Test; DKIM=Pass header.d=example.test", True),
        ("Authentication-Results: mx.test; none\nAuthentication-Results: mx.test; dkim=pass header.d=example.test",
         False),
    ],
)  # fmt: skip
def test_only_the_topmost_header_of_a_trusted_mta_counts(headers: str, vouched: bool) -> None:
    msg = parsed(f"From: alice@example.test\n{headers}")
    assert (trusted_results(msg, "example.test", ["mx.test"]) is not None) is vouched


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"From: a@example.test\r\nSubject: hi\r\n\r\nhello -- there\r\n-- \r\nAlice\r\n", None),
        (b"X-Pad: " + b"x" * 70_000 + b"\r\n\r\nbody", "header is over"),
        (b"From: " + b", ".join(b"a%d@example.test" % i for i in range(500)) + b"\r\n\r\nx", "From header is"),
        (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 1200 + b"--b--\r\n",
         "MIME parts"),
    ],
)  # fmt: skip
def test_a_mail_too_costly_to_parse_is_recognised_from_its_bytes(raw: bytes, reason: str | None) -> None:
    found = unreadable(raw, max_header_bytes=64 * 1024, max_parts=500)
    assert (found is None) if reason is None else (found is not None and reason in found), found


def test_alignment_allows_the_domain_and_its_parents_only() -> None:
    assert aligned("example.test", "example.test") and aligned("example.test", "mail.example.test")
    assert not aligned("mail.example.test", "example.test") and not aligned("test", "example.test")
    assert not aligned("ample.test", "example.test")


@pytest.mark.parametrize(
    ("headers", "envelope", "reason"),
    [
        ("From: a@example.test", "a@example.test", None),
        ("From: a@example.test\nAuto-Submitted: no", "a@example.test", None),
        ("From: a@example.test\nAuto-Submitted: auto-replied", "a@example.test", "Auto-Submitted"),
        ("From: a@example.test\nAuto-Submitted: auto-generated", None, "Auto-Submitted"),
        ("From: a@example.test\nPrecedence: list", None, "Precedence"),
        ("From: a@example.test\nPrecedence: junk", None, "Precedence"),
        ("From: a@example.test\nList-Id: <l.example.test>", None, "List-Id"),
        ("From: a@example.test\nX-Autoreply: yes", None, "X-Autoreply"),
        ("From: a@example.test\nX-Auto-Response-Suppress: OOF, AutoReply", None, "X-Auto-Response-Suppress"),
        ("From: a@example.test", "", "null envelope sender"),
        ("From: a@example.test\nReturn-Path: <>", None, "empty Return-Path"),
        ("From: MAILER-DAEMON@example.test", "x@example.test", "MAILER-DAEMON"),
        ("From: a@example.test\nContent-Type: multipart/report; boundary=b", None, "multipart/report"),
        ("From: a@example.test\nMessage-ID: <confide.123@confide.test>", None, "own message"),
        ("From: Confide <CONFIDE@confide.test>", None, "own address"),
    ],
)
def test_loops_are_recognised(headers: str, envelope: str | None, reason: str | None) -> None:
    found = loop_reason(parsed(headers), envelope, OWN, "confide.test")
    assert (found is None) if reason is None else (found is not None and reason in found), found


def test_rate_limit_is_a_sliding_hour_per_sender() -> None:
    limit = RateLimit(2)
    assert limit.allow("a", 0) and limit.allow("a", 10) and not limit.allow("a", 20)
    assert limit.allow("b", 20), "one sender's limit is not another's"
    assert limit.allow("a", 3600.5), "the first mail left the window"
    limit.forget("a")
    assert limit.allow("a", 3601)


def test_attachment_names_stay_in_their_folder() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("..\\..\\boot.ini") == "boot.ini"
    assert safe_name("WhatsApp Chat mit Oma.zip") == "WhatsApp Chat mit Oma.zip"
    assert safe_name("..") == "attachment" and safe_name("a/b;rm -rf.txt") == "b_rm -rf.txt"
    long = safe_name("Д" * 118 + ".txt")  # 240 bytes of name: cut by bytes, the suffix kept
    assert long.endswith("Д.txt") and len(long.encode()) <= 120


def test_reply_is_threaded_automatic_and_keeps_its_message_id() -> None:
    reply = OutgoingReply(
        reply_id="r-1", channel="email", chat_id="c", text="The key is under the pot [1].",
        citations=[Citation(number=1, source="whatsapp:family.zip")],
        extra={"from": "alice@example.test", "subject": "Re: AW: cabin", "message_id": "q@example.test",
               "references": ["root@example.test"], "question": "Where is the key?\nThanks", "date": "Mon"},
    )  # fmt: skip
    first, again = build_reply(reply, "confide@confide.test"), build_reply(reply, "confide@confide.test")
    assert first["Message-ID"] == again["Message-ID"] == message_id_for("r-1", "confide.test")
    assert first["Subject"] == "Re: cabin" and first["To"] == "alice@example.test"
    assert first["In-Reply-To"] == "<q@example.test>"
    assert first["References"] == "<root@example.test> <q@example.test>"
    assert first["Auto-Submitted"] == "auto-replied"
    text = first.get_content()
    assert text.startswith("The key is under the pot [1].\n\nSources:\n[1] undated · whatsapp:family.zip\n")
    assert "On Mon, alice@example.test wrote:\n> Where is the key?\n> Thanks" in text


def test_serve_builds_the_email_adapter_from_settings(tmp_path: Path) -> None:
    email = EmailSettings(imap_enabled=True, imap_host="127.0.0.1", imap_user="c@x.test", imap_password="pw",
                          relay_host="127.0.0.1", from_address="c@x.test")  # fmt: skip
    [adapter] = build_platform_adapters(make_settings(tmp_path, {}, email=email, local_model={"enabled": True}))
    assert isinstance(adapter, EmailAdapter) and adapter.channel == "email"
    assert adapter.capabilities.can_edit is False


def test_a_mail_is_bounded_once_whether_received_or_imported(tmp_path: Path) -> None:
    """The header and MIME-part bounds are the import settings' (CONFIDE_IMPORTS__*); the old email names are
    refused with the new one, not silently ignored."""
    from bridge.config import ImportSettings

    email = EmailSettings(imap_enabled=True, imap_host="127.0.0.1", imap_user="c@x.test", imap_password="pw",
                          relay_host="127.0.0.1", from_address="c@x.test")  # fmt: skip
    limits = ImportSettings(max_mime_parts=7, max_mail_header_bytes=4096)
    [adapter] = build_platform_adapters(make_settings(tmp_path, {}, email=email, imports=limits))
    assert isinstance(adapter, EmailAdapter)
    assert (adapter.bounds.max_parts, adapter.bounds.max_header_bytes) == (7, 4096)
    with pytest.raises(ValueError, match="CONFIDE_EMAIL__MAX_HEADER_BYTES is now CONFIDE_IMPORTS__MAX_MAIL_HEADER"):
        EmailSettings(max_header_bytes=4096)


async def test_a_reply_whose_send_was_cut_off_goes_again_with_its_message_id_and_is_counted(tmp_path: Path) -> None:
    """The relay took the mail, then Confide stopped before recording it: the reply is in doubt. It is sent again
    with the same Message-ID (a mail client shows one) and counted; a refused send is a plain retry."""
    from aiosmtpd.controller import Controller

    from adapters.email.sender import ReplySender
    from adapters.email.state import MIGRATIONS, EmailState
    from bridge.state.db import StateDB

    received: list[bytes] = []
    refuse = [True]

    class Relay:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            if refuse[0]:
                refuse[0] = False
                return "451 4.3.0 try later"
            received.append(envelope.content)
            return "250 OK"

    port = free_port()
    relay = Controller(Relay(), hostname="127.0.0.1", port=port)
    relay.start()
    db = StateDB(tmp_path / "state.sqlite3")
    await db.open()
    try:
        settings = EmailSettings(relay_host="127.0.0.1", relay_port=port, relay_security="none",
                                 from_address="confide@confide.test")  # fmt: skip
        state = EmailState(await db.platform_state("email", MIGRATIONS))
        reply = OutgoingReply(reply_id="r-9", channel="email", chat_id="c", text="The key is under the pot.",
                              extra={"from": "alice@example.test", "subject": "key"})  # fmt: skip
        sender = ReplySender(settings, state)
        with pytest.raises(Exception, match="451"):
            await sender.deliver(reply)  # refused: not in doubt
        await sender.deliver(reply)
        assert sender.in_doubt == 0 and len(received) == 1
        # A second reply reaches the relay, and the process stops before the send is recorded.
        cut = reply.model_copy(update={"reply_id": "r-10"})
        await state.mark_sending("r-10", message_id_for("r-10", "confide.test"))
        await ReplySender(settings, state)._send(build_reply(cut, "confide@confide.test"))
        await db.close()  # the stop
        db = StateDB(tmp_path / "state.sqlite3")
        await db.open()
        restarted = ReplySender(settings, EmailState(await db.platform_state("email", MIGRATIONS)))
        await restarted.deliver(cut)
        await restarted.deliver(cut)  # the outbox retrying once more sends nothing
    finally:
        relay.stop()
        await db.close()
    assert restarted.in_doubt == 1
    ids = [BytesParser(policy=policy.default).parsebytes(raw)["Message-ID"] for raw in received]
    assert ids == [message_id_for("r-9", "confide.test")] + [message_id_for("r-10", "confide.test")] * 2
