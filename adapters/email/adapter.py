"""The email adapter: mail in (SMTP server and/or IMAP mailbox), answers out (through a relay).

Every received mail goes through `accept`: a place among the mails being read (intake.py), its header block read
within bounds in a thread (headers.py), loop checks, sender authentication, the per-sender rate cap, and only
then the whole mail parsed and `inbox.put`. Before authentication nothing heavy runs on the event loop and the
body is never parsed. Unauthenticated or spoofed mail is logged and dropped before `put`, so nothing of it is
stored and no person is ever attributed a mail they did not send (rather than put with a sender that maps
to nobody, which would keep a stranger's text in the state database for no use). A mail with two of a header
allowed once (two Subjects: one read, another verified) is never answered.

Subject commands (the entries of bridge/commands/command_table.py with a `mail` rule): a subject (without "Re:"/"Fwd:")
starting with "[NAME]", or with the bare word NAME where the rule allows it, is that command. "import" hands the
mail's attachments to the core as "/import"; they are saved under DATA_DIR/attachments/email/. "compare A B",
where A and B are configured models, asks both the question in the body, as "/compare A B <body>"; the question
may also follow the names ("compare A B: question"). With neither, the last question of the thread is
compared. "[compare] A B" is always taken as the command (an unknown name gets the list of models); a plain
"Compare the two offers" stays a question."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Collection
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from typing import TypeVar

from adapters.attachments import safe_name, write_atomically
from adapters.email import mime
from adapters.email.auth import DnsFunc, authenticate, header_signed
from adapters.email.headers import Bounds, MailHead, Unreadable, read_head
from adapters.email.imap_reader import ImapReader
from adapters.email.intake import Reading
from adapters.email.loops import RateLimit, is_own_message_id, loop_reason
from adapters.email.sender import ReplySender, domain_of
from adapters.email.settings import email_settings
from adapters.email.smtp_server import Outcome, serve_smtp, trusted_relay
from adapters.email.state import EmailState
from bridge.commands import command_table
from bridge.config import Settings
from bridge.intake.adapter import Capabilities, InboxPort
from bridge.intake.hearing import fetched_to_hear
from bridge.intake.persons import PersonDirectory
from bridge.messages import Attachment, IncomingMessage, OutgoingReply, utcnow
from bridge.state.store import PlatformState

log = logging.getLogger(__name__)
T = TypeVar("T")

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
        self._state: EmailState | None = None  # handed over by the core at assembly (`attach_state`)
        self._sender: ReplySender | None = None
        self.rate = RateLimit(self.email.rate_limit_per_hour)
        self.own_addresses = {a.lower() for a in [*self.email.addresses, self.email.from_address or ""] if a}
        self.own_domain = domain_of(self.email.from_address or "")
        self.attachments_dir = settings.data_dir / "attachments" / "email"
        self.models = set(settings.models)
        self.directory = PersonDirectory(settings.persons)  # whose voice messages are saved to be heard
        self.smtp_started = asyncio.Event()
        self.imap: ImapReader | None = None
        self._imap_task: asyncio.Task[None] | None = None
        self._intake_stopped = False
        self._inbox: InboxPort | None = None
        self.reading = Reading(self.email.max_reading, self.email.max_reading_bytes)
        self.bounds = Bounds(
            max_header_bytes=settings.imports.max_mail_header_bytes,
            max_parts=settings.imports.max_mime_parts,
            max_address_bytes=self.email.max_address_header_bytes,
            max_addresses=self.email.max_addresses,
            max_depth=self.email.max_mime_depth,
        )

    @property
    def shares_intake(self) -> bool:
        """SMTP alone: several gateways may take mail at once (the MTA picks one); an IMAP mailbox is read by one."""
        return not self.email.imap_enabled

    def attach_directory(self, directory: PersonDirectory) -> None:
        """The core's persons, which follow `confide persons` while Confide runs."""
        self.directory = directory

    async def attach_state(self, state: PlatformState) -> None:
        """Its tables in the state database, given by the core before anything runs or is delivered."""
        self._state = EmailState(state)
        self._sender = ReplySender(self.email, self._state)

    @property
    def state(self) -> EmailState:
        if self._state is None:
            raise RuntimeError("the email adapter was given no state database (bridge.app.assemble hands it one)")
        return self._state

    @property
    def sender(self) -> ReplySender:
        if self._sender is None:
            raise RuntimeError("the email adapter was given no state database (bridge.app.assemble hands it one)")
        return self._sender

    async def run(self, inbox: InboxPort) -> None:
        self._inbox = inbox
        async with asyncio.TaskGroup() as group:
            if self.email.smtp_enabled:
                smtp = serve_smtp(self.email, self.accept, self.smtp_started, self._accepting, self.worth_keeping,
                                  self._is_person, inbox.has_room)  # fmt: skip
                group.create_task(smtp, name="confide-email-smtp")
            if self.email.imap_enabled:
                self.imap = ImapReader(self.email, self.state, self.accept)
                self._imap_task = group.create_task(self.imap.run(), name="confide-email-imap")

    def _accepting(self) -> bool:
        return not self._intake_stopped

    def _is_person(self, address: str) -> bool:
        return self.directory.person_for(f"{self.channel}:{address}") is not None

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
        client that handed it over (None: read from the IMAP mailbox, which waits for its turn instead of BUSY)."""
        assert self._inbox is not None, "accept before run"
        if peer is None:
            await self._inbox.wait_for_room()  # the mailbox keeps its mail (unseen, unchecked) until there is room
        async with self.reading.slot(len(raw), None if peer is None else self.email.busy_wait_s) as admitted:
            if not admitted:
                log.warning("mail of %d bytes from peer %s deferred: %d mails (%d bytes) being read", len(raw), peer,
                            self.reading.mails, self.reading.bytes)  # fmt: skip
                return Outcome.BUSY
            return await self._take(raw, envelope_sender, peer)

    async def _take(self, raw: bytes, envelope_sender: str | None, peer: str | None) -> Outcome:
        read = await self._head(raw, envelope_sender, peer or "imap")
        if isinstance(read, Outcome):
            return read
        head, mail_id, sender = read
        verdict = await authenticate(
            raw, head, domain_of(sender), self._authserv_ids_for(peer), self.email.verify_dkim, self.dnsfunc
        )
        if not verdict.authenticated:
            log.warning("mail %s claiming to be from %s dropped: not authenticated (%s)", mail_id, sender, verdict.how)
            return Outcome.DROPPED
        if not self.rate.allow(sender):
            log.warning("mail %s from %s refused: over %d mails per hour", mail_id, sender, self.rate.per_hour)
            return Outcome.RATE_LIMITED
        try:
            outcome = await self._store(raw, head, mail_id, sender, verdict.proven)
        except BaseException:
            self.rate.forget(sender)
            raise
        if outcome is not Outcome.STORED:
            self.rate.forget(sender)
        done = {Outcome.STORED: "queued", Outcome.DUPLICATE: "was queued before"}.get(outcome, outcome.value)
        log.info("mail %s from %s %s (%s)", mail_id, sender, done, verdict.how)
        return outcome

    async def _head(self, raw: bytes, envelope_sender: str | None, where: str) -> tuple[MailHead, str, str] | Outcome:
        """The header block, id and sender of a mail that may be answered if its sender is authenticated; else the
        outcome of one that may not (logged): unreadable, a header allowed once twice, not one sender, a loop, or
        an address no person has (the bridge would ignore it)."""
        try:
            head, mail_id, loop = await self._off_loop(self._read_head, raw, envelope_sender)
        except Unreadable as exc:
            log.warning("mail of %d bytes from peer %s %s: %s", len(raw), where,
                        "refused" if exc.permanent else "dropped unread", exc.reason)  # fmt: skip
            return Outcome.REFUSED if exc.permanent else Outcome.DROPPED
        except TimeoutError:
            log.warning("mail of %d bytes from peer %s dropped: its header not read within %.0f s", len(raw), where,
                        self.email.parse_budget_s)  # fmt: skip
            return Outcome.DROPPED
        if duplicated := head.duplicated():
            log.warning("mail %s from peer %s not answered: it carries more than one %s header", mail_id, where,
                        ", ".join(duplicated))  # fmt: skip
            return Outcome.DROPPED
        sender = head.sender
        if sender is None:
            log.warning("mail %s dropped: From names %d addresses", mail_id, len(head.from_addresses))
            return Outcome.DROPPED
        if loop:
            log.info("mail %s from %s not answered: %s", mail_id, sender, loop)
            return Outcome.DROPPED
        if not self._is_person(sender):
            log.info("mail %s from %s dropped: no person has this address", mail_id, sender)
            return Outcome.DROPPED
        return head, mail_id, sender

    async def worth_keeping(self, first: bytes, envelope_sender: str | None, peer: str) -> bool:
        """Whether an SMTP mail still arriving, of which `first` (a MiB) has come, could be answered: its header
        passes every check before authentication, and a DKIM signature of the From domain holds over it (its body is
        checked once it has arrived) or a trusted relay hands it over. One that could not is read to its end without
        being kept (smtp_server.read_data)."""
        read = await self._head(first, envelope_sender, peer)
        if isinstance(read, Outcome):
            return False
        head, mail_id, sender = read
        if self._authserv_ids_for(peer):
            return True  # the relay's Authentication-Results are read once the mail has arrived
        if self.email.verify_dkim and head.dkim_signatures:
            if await asyncio.to_thread(header_signed, head, domain_of(sender), self.dnsfunc):
                return True
        log.warning("mail %s claiming to be from %s dropped while arriving: no DKIM signature of its domain holds",
                    mail_id, sender)  # fmt: skip
        return False

    async def _store(self, raw: bytes, head: MailHead, mail_id: str, sender: str, proven: bool) -> Outcome:
        """Parse the whole mail of an authenticated sender and put it in the inbox."""
        assert self._inbox is not None
        try:
            msg = await self._off_loop(_parse, raw)
            if tuple(name.lower() for name in msg.keys()) != head.names:
                # Judged on one reading of the header, answered from another: never.
                log.warning("mail %s from %s dropped: its header read differently when parsed whole", mail_id, sender)
                return Outcome.DROPPED
            message = await self._incoming(msg, mail_id, sender, proven)
        except RecursionError:
            log.warning("mail %s from %s refused: nested too deeply to read", mail_id, sender)
            return Outcome.REFUSED
        except TimeoutError:
            log.warning("mail %s from %s dropped: not read within %.0f s", mail_id, sender, self.email.parse_budget_s)
            return Outcome.DROPPED
        return Outcome.STORED if await self._inbox.put(message) else Outcome.DUPLICATE

    def _read_head(self, raw: bytes, envelope_sender: str | None) -> tuple[MailHead, str, str | None]:
        """(the header block, the mail's id, why it must not be answered): CPU work, run in a thread."""
        head = read_head(raw, self.bounds)
        mail_id = head.message_id or "sha256:" + hashlib.sha256(raw).hexdigest()
        try:
            return head, mail_id, loop_reason(head.msg, envelope_sender, self.own_addresses, self.own_domain)
        except RecursionError:
            raise Unreadable("a header nested too deeply to read", permanent=True) from None

    async def _off_loop(self, work: Callable[..., T], *args: object) -> T:
        """`work` in a thread within the parse budget. Past it the thread runs on (a thread cannot be stopped): the
        bounds checked before any parsing are what keep that short."""
        return await asyncio.wait_for(asyncio.to_thread(work, *args), self.email.parse_budget_s)

    def _authserv_ids_for(self, peer: str | None) -> list[str]:
        """Whose Authentication-Results count for a mail from `peer`: in SMTP mode Confide is the receiving MTA, and
        a header that came with the mail was written by whoever sent it, unless a trusted relay handed it over."""
        if peer is None:
            return self.email.trusted_authserv_ids  # IMAP: the mailbox provider's MTA received it
        return self.email.trusted_authserv_ids if trusted_relay(self.email, peer) else []

    async def _incoming(self, msg: EmailMessage, mail_id: str, sender: str, proven: bool) -> IncomingMessage:
        subject = mime.header(msg, "Subject")
        root = mime.thread_root(msg)
        parent = mime.message_ids(mime.header(msg, "In-Reply-To"))
        topic, body = mime.normalized_subject(subject), (await asyncio.to_thread(mime.mail_text, msg)).new_text
        if command := subject_command(topic, body, self.models):
            text, files = command
            attachments = await self._save_attachments(msg, mail_id) if files else []
        elif not body and (voice := await self._voice(msg, mail_id, sender)) is not None:
            text, attachments = "", [voice]  # a voice message is the question; bridge/intake/hearing.py transcribes it
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
        parts = await asyncio.to_thread(mime.attachments, msg)  # decoding files of megabytes: off the loop
        return [await self._save(mail_id, index, part) for index, part in enumerate(parts, start=1)]

    async def _save(self, mail_id: str, index: int, part: mime.MailAttachment) -> Attachment:
        """One attached file under the mail's own folder (named by a hash of its Message-ID), written atomically."""
        path = (
            self.attachments_dir
            / hashlib.sha256(mail_id.encode()).hexdigest()[:24]
            / f"{index:02d}-{safe_name(part.name)}"
        )
        await asyncio.to_thread(write_atomically, path, part.data)
        return Attachment(name=part.name, mime_type=part.mime_type, size=len(part.data), path=str(path))


def _parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


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
