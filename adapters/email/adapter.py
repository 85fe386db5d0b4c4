"""The email adapter: mail in (SMTP server and/or IMAP mailbox), answers out (through a relay).

Every received mail goes through `accept`: loop checks, sender authentication, the per-sender rate cap,
then `inbox.put`. Unauthenticated or spoofed mail is logged and dropped before `put`, so nothing of it is
stored and no person is ever attributed a mail they did not send (rather than put with a sender that maps
to nobody, which would keep a stranger's text in the state database for no use).

Subject commands (the entries of bridge/command_table.py with a `mail` rule): a subject (without "Re:"/"Fwd:")
starting with "[NAME]", or with the bare word NAME where the rule allows it, is that command. "import" hands the
mail's attachments to the core as "/import"; they are saved under DATA_DIR/attachments/email/. "compare A B",
where A and B are configured models, asks both the question in the body, as "/compare A B <body>"; the question
may also follow the names ("compare A B: question"). With neither, the last question of the thread is
compared. "[compare] A B" is always taken as the command (an unknown name gets the list of models); a plain
"Compare the two offers" stays a question."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import re
from collections.abc import Collection
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

from adapters.attachments import safe_name, write_atomically
from adapters.email import mime
from adapters.email.auth import DnsFunc, authenticate
from adapters.email.imap_reader import ImapReader
from adapters.email.loops import RateLimit, is_own_message_id, loop_reason
from adapters.email.sender import ReplySender, domain_of
from adapters.email.settings import email_settings
from adapters.email.smtp_server import Outcome, serve_smtp
from adapters.email.state import EmailState
from bridge import command_table
from bridge.adapter import Capabilities, InboxPort
from bridge.config import Settings
from bridge.hearing import fetched_to_hear
from bridge.messages import Attachment, IncomingMessage, OutgoingReply, utcnow
from bridge.persons import Directory

log = logging.getLogger(__name__)

# "[name] rest" or "name rest" ("[import" too, as before); the name is looked up in the command table.
_SUBJECT = re.compile(
    r"^(?P<open>\[)?(?P<name>[a-z]+)(?P<close>\])?(?!\w)[:\s]*(?P<rest>.*)$", re.IGNORECASE | re.DOTALL
)
# A model name ends at a space or a colon: "compare A B: question".
_MODEL = r"([^\s:]+)(?=[\s:]|$):?\s*"


class EmailAdapter:
    channel = "email"
    capabilities = Capabilities(can_edit=False)
    bot_names: tuple[str, ...] = ()

    def __init__(self, settings: Settings, dnsfunc: DnsFunc | None = None) -> None:
        self.settings = settings
        self.email = email_settings(settings)
        self.dnsfunc = dnsfunc  # None: the system resolver (tests serve their own DKIM keys)
        self.state = EmailState(settings.state_path, settings.data_dir / "email" / "email.sqlite3")
        self.sender = ReplySender(self.email, self.state)
        self.rate = RateLimit(self.email.rate_limit_per_hour)
        self.own_addresses = {a.lower() for a in [*self.email.addresses, self.email.from_address or ""] if a}
        self.own_domain = domain_of(self.email.from_address or "")
        self.attachments_dir = settings.data_dir / "attachments" / "email"
        self.models = set(settings.models)
        self.directory = Directory(settings.persons)  # whose voice messages are saved to be heard
        self.smtp_started = asyncio.Event()
        self.imap: ImapReader | None = None
        self._imap_task: asyncio.Task[None] | None = None
        self._intake_stopped = False
        self._inbox: InboxPort | None = None

    async def run(self, inbox: InboxPort) -> None:
        self._inbox = inbox
        async with asyncio.TaskGroup() as group:
            if self.email.smtp_enabled:
                smtp = serve_smtp(self.email, self.accept, self.smtp_started, lambda: not self._intake_stopped)
                group.create_task(smtp, name="confide-email-smtp")
            if self.email.imap_enabled:
                self.imap = ImapReader(self.email, self.state, self.accept)
                self._imap_task = group.create_task(self.imap.run(), name="confide-email-imap")

    async def stop_intake(self) -> None:
        """A graceful stop: SMTP defers new mail (421, the sending MTA retries); the mailbox is read no more."""
        self._intake_stopped = True
        if self._imap_task is not None:
            self._imap_task.cancel()  # a mail taken but not checkpointed is read again: `put` is idempotent

    async def deliver(self, reply: OutgoingReply) -> str | None:
        return await self.sender.deliver(reply)

    async def show_partial(self, message: IncomingMessage, text: str, edit_token: str | None) -> str | None:
        return None  # a sent mail cannot be edited; the whole answer goes out once

    async def typing(self, message: IncomingMessage) -> None:
        return None

    # -- taking a mail ---------------------------------------------------------------------------

    async def accept(self, raw: bytes, envelope_sender: str | None, peer: str | None = None) -> Outcome:
        """Decide about one received mail and put it in the inbox if it is to be answered. `peer`: the SMTP
        client that handed it over (None: read from the IMAP mailbox)."""
        assert self._inbox is not None, "accept before run"
        if reason := mime.unreadable(raw, self.email.max_header_bytes, self.email.max_mime_parts):
            log.warning("mail of %d bytes from peer %s dropped unread: %s", len(raw), peer or "imap", reason)
            return Outcome.DROPPED
        try:
            # Parsing is CPU work that a hostile mail can make long: off the event loop, within a budget.
            msg, sender_count, sender = await asyncio.wait_for(asyncio.to_thread(_read, raw), self.email.parse_budget_s)
        except TimeoutError:
            log.warning("mail of %d bytes from peer %s dropped: not read within %.0f s", len(raw), peer or "imap",
                        self.email.parse_budget_s)  # fmt: skip
            return Outcome.DROPPED
        mail_id = mime.message_id(msg) or "sha256:" + hashlib.sha256(raw).hexdigest()
        if sender is None:
            log.warning("mail %s dropped: From names %d addresses", mail_id, sender_count)
            return Outcome.DROPPED
        if reason := loop_reason(msg, envelope_sender, self.own_addresses, self.own_domain):
            log.info("mail %s from %s not answered: %s", mail_id, sender, reason)
            return Outcome.DROPPED
        verdict = await authenticate(
            raw, msg, domain_of(sender), self._authserv_ids_for(peer), self.email.verify_dkim, self.dnsfunc
        )
        if not verdict.authenticated:
            log.warning("mail %s claiming to be from %s dropped: not authenticated (%s)", mail_id, sender, verdict.how)
            return Outcome.DROPPED
        if not self.rate.allow(sender):
            log.warning("mail %s from %s refused: over %d mails per hour", mail_id, sender, self.rate.per_hour)
            return Outcome.RATE_LIMITED
        try:
            message = await self._incoming(msg, mail_id, sender, verdict.proven)
            created = await self._inbox.put(message)
        except BaseException:
            self.rate.forget(sender)
            raise
        if not created:
            self.rate.forget(sender)
        log.info("mail %s from %s %s (%s)", mail_id, sender, "queued" if created else "was queued before", verdict.how)
        return Outcome.STORED if created else Outcome.DUPLICATE

    def _authserv_ids_for(self, peer: str | None) -> list[str]:
        """Whose Authentication-Results count for a mail from `peer`: in SMTP mode Confide is the receiving MTA, and
        a header that came with the mail was written by whoever sent it, unless a trusted relay handed it over."""
        if peer is None:
            return self.email.trusted_authserv_ids  # IMAP: the mailbox provider's MTA received it
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return []
        if any(address in network for network in self.email.trusted_relays):
            return self.email.trusted_authserv_ids
        return []

    async def _incoming(self, msg: EmailMessage, mail_id: str, sender: str, proven: bool) -> IncomingMessage:
        subject = mime.header(msg, "Subject")
        root = mime.thread_root(msg)
        parent = mime.message_ids(mime.header(msg, "In-Reply-To"))
        topic, body = mime.normalized_subject(subject), (await asyncio.to_thread(mime.mail_text, msg)).new_text
        if command := subject_command(topic, body, self.models):
            text, files = command
            attachments = await self._save_attachments(msg, mail_id) if files else []
        elif not body and (voice := await self._voice(msg, mail_id, sender)) is not None:
            text, attachments = "", [voice]  # a voice message is the question; bridge/hearing.py transcribes it
        else:
            # A question may be the subject alone ("When is the dinner?" with an empty body).
            text, attachments = body or topic, []
        return IncomingMessage(
            channel=self.channel,
            chat_id=f"{sender}/{root}",  # one chat per person and thread: "yes" to /forget stays in its thread
            sender=sender,
            platform_message_id=mail_id,
            text=text,
            time=_sent_at(msg),
            reply_to=parent[0] if parent else None,
            thread_id=root,
            is_direct=True,
            sender_proven=proven,
            replies_to_bot=bool(parent) and is_own_message_id(parent[0], self.own_domain),
            attachments=attachments,
            extra={
                "message_id": mime.message_id(msg),
                "references": mime.message_ids(mime.header(msg, "References"))[-20:],
                "subject": subject,
                "from": sender,
                "date": mime.header(msg, "Date"),
                "question": text if not attachments else "",
            },
        )

    async def _voice(self, msg: EmailMessage, mail_id: str, sender: str) -> Attachment | None:
        """A known person's mail of no words and one audio file, where a transcriber is set up: that file, saved
        (a stranger's is never written anywhere)."""
        transcriber = self.settings.transcriber
        if transcriber.backend == "none" or self.directory.person_for(f"{self.channel}:{sender}") is None:
            return None
        parts = await asyncio.to_thread(mime.attachments, msg)  # decoding a file of megabytes: off the loop
        if len(parts) != 1 or not fetched_to_hear(transcriber, parts[0].mime_type, len(parts[0].data)):
            return None
        return await self._save(mail_id, 1, parts[0])

    async def _save_attachments(self, msg: EmailMessage, mail_id: str) -> list[Attachment]:
        return [await self._save(mail_id, index, part) for index, part in enumerate(mime.attachments(msg), start=1)]

    async def _save(self, mail_id: str, index: int, part: mime.MailAttachment) -> Attachment:
        """One attached file under the mail's own folder (named by a hash of its Message-ID), written atomically."""
        path = (
            self.attachments_dir
            / hashlib.sha256(mail_id.encode()).hexdigest()[:24]
            / f"{index:02d}-{safe_name(part.name)}"
        )
        await asyncio.to_thread(write_atomically, path, part.data)
        return Attachment(name=part.name, mime_type=part.mime_type, size=len(part.data), path=str(path))


def _read(raw: bytes) -> tuple[EmailMessage, int, str | None]:
    """The parsed mail, how many addresses its From names, and the one sender (None unless exactly one)."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    addresses = [a.lower() for _, a in getaddresses([mime.header(msg, "From")]) if "@" in a]
    return msg, len(addresses), addresses[0] if len(addresses) == 1 else None


def subject_command(subject: str, body: str, models: Collection[str]) -> tuple[str, bool] | None:
    """The chat command a subject stands for, and whether the mail's attachments are its input; None for an
    ordinary subject."""
    match = _SUBJECT.match(subject.strip())
    spec = command_table.typed(match["name"]) if match else None
    if match is None or spec is None or spec.mail is None:
        return None
    if spec.mail.files:
        return f"/{spec.name}", True
    bracketed = bool(match["open"] and match["close"])
    named = re.match(_MODEL * spec.mail.models + "(.*)$", match["rest"], re.DOTALL)
    if named is None or not (bracketed or all(name in models for name in named.groups()[:-1])):
        # "[compare] A" gets the command's usage; a bare "Compare the two offers" is an ordinary subject.
        return (" ".join([f"/{spec.name}", *match["rest"].split()]), False) if bracketed else None
    question = " ".join((body.strip() or named.groups()[-1]).split())
    return " ".join([f"/{spec.name}", *named.groups()[:-1], question]).strip(), False


def _sent_at(msg: EmailMessage) -> datetime:
    try:
        when = parsedate_to_datetime(mime.header(msg, "Date"))
    except (TypeError, ValueError, IndexError):
        return utcnow()
    return when if when.tzinfo is not None else utcnow()
