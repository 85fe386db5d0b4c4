"""Replies as mail: threaded under the question, marked as automatic, sent once through the relay."""

from __future__ import annotations

import html
import logging
import ssl
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from adapters.email.mime import normalized_subject
from adapters.email.settings import EmailSettings
from adapters.email.state import EmailState
from bridge.messages import OutgoingReply, utcnow

log = logging.getLogger(__name__)
SEND_TIMEOUT_S = 60.0


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def message_id_for(reply_id: str, domain: str) -> str:
    """Derived from the reply id, so a reply sent again after a crash keeps its Message-ID (receivers dedupe)."""
    return f"<confide.{reply_id}@{domain}>"


def reply_subject(subject: str) -> str:
    return "Re: " + (normalized_subject(subject) or "your question")


def quoted(question: str, author: str, when: str) -> str:
    lines = "\n".join(f"> {line}" if line else ">" for line in question.splitlines())
    attribution = f"On {when}, {author} wrote:" if when else f"{author} wrote:"
    return f"{attribution}\n{lines}"


def build_reply(reply: OutgoingReply, from_address: str) -> EmailMessage:
    """The reply mail: answer, its sources, and the question quoted below (bottom-quoting the question)."""
    extra = reply.extra
    msg = EmailMessage()
    msg["From"] = from_address
    msg["To"] = extra["from"]
    msg["Subject"] = reply_subject(extra.get("subject", ""))
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = message_id_for(reply.reply_id, domain_of(from_address))
    if original := extra.get("message_id"):
        msg["In-Reply-To"] = f"<{original}>"
        msg["References"] = " ".join(f"<{i}>" for i in [*extra.get("references", []), original])
    # RFC 3834: an automatic answer; and ask Exchange-style responders not to answer it in turn.
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    body = reply.render_plain()
    if question := extra.get("question", "").strip():
        body += "\n\n" + quoted(question, extra["from"], extra.get("date", ""))
    msg.set_content(body + "\n", charset="utf-8")
    if reply.images:
        _with_inline_images(msg, body, reply, domain_of(from_address))
    return msg


def _with_inline_images(msg: EmailMessage, body: str, reply: OutgoingReply, domain: str) -> None:
    """The text as plain and as HTML, the HTML showing each picture inline (multipart/related, cid: links), so
    mail clients without HTML still get the whole answer."""
    cids = [f"chart{number}.{reply.reply_id}@{domain}" for number in range(len(reply.images))]
    pictures = "".join(
        f'<p><img src="cid:{cid}" alt="{html.escape(image.alt)}" width="{image.size[0]}"></p>'
        for cid, image in zip(cids, reply.images, strict=True)
    )
    text = f'<pre style="white-space: pre-wrap; font-family: inherit">{html.escape(body)}</pre>'
    msg.add_alternative(f"<!DOCTYPE html><html><body>{text}{pictures}</body></html>\n", subtype="html")
    page = msg.get_payload()[1]  # type: ignore[index]
    assert isinstance(page, EmailMessage)
    for cid, image in zip(cids, reply.images, strict=True):
        page.add_related(image.data, "image", "png", cid=f"<{cid}>", filename=image.name, disposition="inline")


class ReplySender:
    def __init__(self, settings: EmailSettings, state: EmailState) -> None:
        self.settings = settings
        self.state = state
        self.in_doubt = 0  # replies sent again because an earlier send's outcome was not recorded

    async def deliver(self, reply: OutgoingReply) -> str | None:
        """Send once per reply_id; returns the reply's Message-ID."""
        if sent := await self.state.sent_message_id(reply.reply_id):
            log.info("reply %s was already sent as %s", reply.reply_id, sent)
            return sent
        if not reply.extra.get("from"):
            # Nothing to answer to (not a mail we accepted): retrying cannot help, so say so and move on.
            log.error("reply %s to %s has no recipient; not sent", reply.reply_id, reply.chat_id)
            return None
        assert self.settings.from_address is not None
        msg = build_reply(reply, self.settings.from_address)
        if await self.state.mark_sending(reply.reply_id, msg["Message-ID"]):
            # The relay may have taken it before the stop: SMTP cannot say. The same Message-ID lets the
            # person's mail client show one mail if both arrive.
            self.in_doubt += 1
            log.warning("reply %s may have been sent before the last stop; sending it again as %s (in doubt)",
                        reply.reply_id, msg["Message-ID"])  # fmt: skip
        try:
            await self._send(msg)
        except Exception:
            await self.state.sending_failed(reply.reply_id)
            raise
        await self.state.mark_sent(reply.reply_id, msg["Message-ID"])
        log.info("reply %s sent as %s", reply.reply_id, msg["Message-ID"])
        return str(msg["Message-ID"])

    async def _send(self, msg: EmailMessage) -> None:
        s = self.settings
        password = s.relay_password.get_secret_value() if s.relay_password else None
        await aiosmtplib.send(
            msg,
            hostname=s.relay_host,
            port=s.relay_port,
            use_tls=s.relay_security == "tls",
            start_tls=s.relay_security == "starttls",
            tls_context=tls_client_context(s) if s.relay_security != "none" else None,
            username=s.relay_user,
            password=password,
            timeout=SEND_TIMEOUT_S,
        )


def tls_client_context(settings: EmailSettings) -> ssl.SSLContext:
    """Verifying context: the system's CAs, or the configured CA file (a private relay or IMAP server)."""
    return ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
