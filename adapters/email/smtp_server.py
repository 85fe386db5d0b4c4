"""Mode 1: Confide's own SMTP server (aiosmtpd) in the bridge's event loop.

It takes mail only for its configured addresses (550 for others), only up to the size limit (552), and
answers 250 only after the mail is in the inbox, so a crash before that makes the sending MTA retry.
STARTTLS (or implicit TLS) with the configured certificate; AUTH only over TLS. Only `max_receiving` mails arrive
at once (and as many from persons' addresses), `max_receiving_per_peer` from one client (intake.py): a mail past
that waits up to `busy_wait_s`, then gets 451 4.3.2 before it is sent.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import ssl
import warnings
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from adapters.email.intake import Receiving
from adapters.email.settings import EmailSettings
from bridge.ops.diskspace import NoRoom

log = logging.getLogger(__name__)


class Outcome(Enum):
    STORED = "stored"  # in the inbox
    DUPLICATE = "duplicate"  # was already in the inbox
    DROPPED = "dropped"  # not to be answered (loop, unauthenticated, unreadable): accepted and discarded
    RATE_LIMITED = "rate limited"
    REFUSED = "refused"  # can never be read (nested too deeply): refused for good, the sending MTA bounces it
    BUSY = "busy"  # too much mail being read at once: the sending MTA retries later


# (the mail, its envelope sender, the connecting peer's address: None where no SMTP peer handed it over (IMAP))
Accept = Callable[[bytes, str | None, str | None], Awaitable[Outcome]]
# (the first MiB of a mail still arriving, its envelope sender, the peer): whether it could be answered at all
Judge = Callable[[bytes, str | None, str], Awaitable[bool]]

RESPONSES = {
    Outcome.STORED: "250 2.0.0 OK: queued",
    Outcome.DUPLICATE: "250 2.0.0 OK: already queued",
    # 250, not 5xx: a rejection makes the MTA in front bounce to the (possibly forged) sender: backscatter.
    Outcome.DROPPED: "250 2.0.0 OK",
    # A real person's mail is retried later by their MTA rather than lost.
    Outcome.RATE_LIMITED: "451 4.7.1 Too many mails from this sender; try again later",
    # Permanent: retrying could never succeed (a 451 here made the sending server retry it forever).
    Outcome.REFUSED: "554 5.6.0 Mail nested too deeply to read; not accepted",
    Outcome.BUSY: "451 4.3.2 Too much mail at once; try again later",
}


STOPPING = "421 4.3.2 Confide is restarting; try again later"
NO_ROOM = "452 4.3.1 Insufficient system storage; try again later"


class Handler:
    def __init__(
        self,
        addresses: list[str],
        accept: Accept,
        accepting: Callable[[], bool],
        judge: Judge | None = None,
        has_room: Callable[[], bool] = lambda: True,
    ) -> None:
        self.addresses = {a.lower() for a in addresses}
        self.accept = accept
        self.accepting = accepting  # False during a graceful stop: the sending MTA keeps the mail and retries
        self.judge = judge
        self.has_room = has_room  # False while the data directory's disk is below its floor (bridge/ops/diskspace.py)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if not self.accepting():
            return STOPPING
        if not self.has_room():
            return NO_ROOM
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() not in self.addresses:
            return f"550 5.1.1 <{address}>: no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if not self.accepting():
            return STOPPING
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        try:
            outcome = await self.accept(raw, envelope.mail_from, _peer_address(session))
        except NoRoom:  # the disk filled while it arrived; the warning was logged once, the sender retries
            return NO_ROOM
        except Exception:
            log.exception(
                "could not take mail from %s (peer %s); the sender will retry", envelope.mail_from, session.peer
            )
            return "451 4.3.0 Temporary failure; try again later"
        return RESPONSES[outcome]


class BoundedSMTP(SMTP):
    """aiosmtpd's SMTP with a place in `receiving` held for each mail while it arrives and is taken, the mail read
    in the pieces that arrive (read_data) instead of aiosmtpd's line at a time, and a mail larger than a piece
    judged on its first one: one that could never be answered is read to its end without being kept, its place
    given back, so strangers' large mails neither fill memory nor keep a person's mail waiting."""

    def __init__(self, handler: Handler, receiving: Receiving, wait_s: float, **options: Any) -> None:
        super().__init__(handler, **options)
        self.handler = handler
        self.receiving = receiving
        self.wait_s = wait_s

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if self.envelope is None or not self.envelope.rcpt_tos or arg:
            await super().smtp_DATA(arg)  # its own 503/501
            return
        assert self.session is not None
        peer, sender = _peer_address(self.session), self.envelope.mail_from
        async with self.receiving.place(peer, _address(sender), self.wait_s) as place:
            if place.refused is not None:
                log.warning("mail from %s (peer %s) deferred before DATA: %s", sender, peer, place.refused)
                await self.push(RESPONSES[Outcome.BUSY])
                return
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            judge = self.handler.judge

            async def worth_keeping(first: bytes) -> bool:
                keep = judge is None or await judge(first, sender, peer)
                if not keep:
                    place.release()
                return keep

            received = await read_data(self._reader, self.data_size_limit, worth_keeping)
            if received is None:
                return  # the connection ended first
            if isinstance(received, str):
                self._set_post_data_state()
                await self.push(received)
                return
            self.envelope.original_content = self.envelope.content = received
            status = await self.handler.handle_DATA(self, self.session, self.envelope)
            self._set_post_data_state()
            await self.push(status)


DATA_END = b"\r\n.\r\n"
TOO_MUCH = "552 Error: Too much mail data"
DATA_PIECE = 1 << 20  # the most the reader buffers before it looks for the end again (and 2 MiB before TCP waits)


async def read_data(
    reader: asyncio.StreamReader,
    size_limit: int | None,
    worth_keeping: Callable[[bytes], Awaitable[bool]] | None = None,
) -> bytes | str | None:
    """One mail's DATA up to its lone "." line, dot-unstuffed (RFC 5321 section 4.5.2); or the reply once all of it
    has arrived when it is not kept: 552 when it is over `size_limit`, 250 when `worth_keeping` (asked once, with
    the first DATA_PIECE bytes of a longer mail) said no. None when the connection ended first.

    aiosmtpd reads DATA a line at a time into an object per line: 0.7 s of the event loop and twice its size in
    memory for a 24 MB mail. Here it is read in pieces of up to a MiB, never past the end of the mail (what the
    client sent after it stays in the reader for the next command): where the end could begin in what was read
    already, only the bytes that would complete it are read. The end may be the first line (an empty mail), as if
    a line end preceded the mail. A mail not kept keeps only its last 4 bytes (where its end may begin)."""
    data = bytearray()
    total = 0
    kept, unwanted = True, False
    bounded: Any = reader  # StreamReader's private bound on one readuntil (aiosmtpd's line length), raised meanwhile
    limit = bounded._limit
    bounded._limit = DATA_PIECE
    try:
        while True:
            tail = bytes(data[-4:]) if not kept or len(data) >= 4 else (b"\r\n" + bytes(data))[-4:]
            started = next((k for k in (4, 3, 2, 1) if tail.endswith(DATA_END[:k])), 0)
            try:
                if started:
                    piece = await reader.readexactly(len(DATA_END) - started)
                else:
                    piece = await reader.readuntil(DATA_END)
            except asyncio.LimitOverrunError as exc:
                piece = await reader.read(exc.consumed)  # no end in the first MiB: keep reading
            except asyncio.IncompleteReadError:
                return None
            data += piece
            total += len(piece)
            ended = (bytes(data[-5:]) if not kept or len(data) >= 5 else b"\r\n" + bytes(data)) == DATA_END
            if kept and not ended and worth_keeping is not None and len(data) > DATA_PIECE:
                unwanted = not await worth_keeping(bytes(data))
                kept, worth_keeping = not unwanted, None
            if kept and size_limit and total > size_limit + len(DATA_END):
                kept = False
            if not kept:
                del data[:-4]
            if ended:
                break
    finally:
        bounded._limit = limit
    if size_limit and total - 3 > size_limit:
        return TOO_MUCH
    if unwanted:
        return RESPONSES[Outcome.DROPPED]
    body = bytes(data[:-3])  # without the lone "." line; the line end before it ends the last line
    if body.startswith(b"."):
        body = body[1:]
    return body.replace(b"\r\n.", b"\r\n")


def _address(envelope_sender: str | None) -> str | None:
    return envelope_sender.strip("<> ").lower() if envelope_sender else None


def _peer_address(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


def server_tls_context(settings: EmailSettings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key) if settings.tls_key else None)
    return context


class Authenticator:
    """SMTP AUTH against the configured logins, compared in constant time."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        expected = self.users.get(login)
        ok = expected is not None and hmac.compare_digest(expected.encode(), data.password)
        if not ok:
            log.warning("SMTP AUTH failed for login %r from %s", login, session.peer)
        return AuthResult(success=ok, handled=False)


async def serve_smtp(
    settings: EmailSettings,
    accept: Accept,
    started: asyncio.Event | None = None,
    accepting: Callable[[], bool] = lambda: True,
    judge: Judge | None = None,
    known: Callable[[str], bool] = lambda sender: False,
    has_room: Callable[[], bool] = lambda: True,
) -> None:
    """Listen until cancelled; while `accepting()` is False, every mail is deferred (421). `judge`: whether a mail
    larger than a MiB could be answered, from its first MiB (None: every mail is kept). `known`: whether an
    envelope sender is a person's address (its mail has places of its own)."""
    loop = asyncio.get_running_loop()
    tls = server_tls_context(settings)
    users = {login: secret.get_secret_value() for login, secret in settings.auth_users.items()}
    handler = Handler(settings.addresses, accept, accepting, judge, has_room)
    receiving = Receiving(
        settings.max_receiving, settings.max_receiving_per_peer, lambda peer: trusted_relay(settings, peer), known
    )
    hostname = settings.from_address.rpartition("@")[2] if settings.from_address else None

    def protocol() -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without STARTTLS; with implicit TLS the whole connection is encrypted.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
            return _smtp()

    def _smtp() -> SMTP:
        return BoundedSMTP(
            handler,
            receiving,
            settings.busy_wait_s,
            data_size_limit=settings.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=hostname,
            ident="Confide",
            tls_context=None if settings.implicit_tls else tls,
            auth_required=settings.auth_required,
            auth_require_tls=not settings.implicit_tls,
            authenticator=Authenticator(users) if users else None,
            loop=loop,
        )

    server = await loop.create_server(
        protocol, settings.smtp_listen, settings.smtp_port, ssl=tls if settings.implicit_tls else None
    )
    log.info(
        "SMTP server on %s:%d for %s (%s)",
        settings.smtp_listen,
        settings.smtp_port,
        ", ".join(settings.addresses),
        "implicit TLS" if settings.implicit_tls else "STARTTLS" if tls else "no TLS",
    )
    if started is not None:
        started.set()
    try:
        await asyncio.Future()
    finally:
        server.close()


def trusted_relay(settings: EmailSettings, peer: str) -> bool:
    """Whether `peer` is one of the trusted relays (all mail comes through one: it is not held to a peer's share)."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in settings.trusted_relays)
