"""Mode 1: Confide's own SMTP server (aiosmtpd) in the bridge's event loop.

It takes mail only for its configured addresses (550 for others), only up to the size limit (552), and
answers 250 only after the mail is in the inbox, so a crash before that makes the sending MTA retry.
STARTTLS (or implicit TLS) with the configured certificate; AUTH only over TLS.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
import warnings
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from adapters.email.settings import EmailSettings

log = logging.getLogger(__name__)


class Outcome(Enum):
    STORED = "stored"  # in the inbox
    DUPLICATE = "duplicate"  # was already in the inbox
    DROPPED = "dropped"  # not to be answered (loop, unauthenticated, unreadable): accepted and discarded
    RATE_LIMITED = "rate limited"


# (the mail, its envelope sender, the connecting peer's address: None where no SMTP peer handed it over (IMAP))
Accept = Callable[[bytes, str | None, str | None], Awaitable[Outcome]]

RESPONSES = {
    Outcome.STORED: "250 2.0.0 OK: queued",
    Outcome.DUPLICATE: "250 2.0.0 OK: already queued",
    # 250, not 5xx: a rejection makes the MTA in front bounce to the (possibly forged) sender: backscatter.
    Outcome.DROPPED: "250 2.0.0 OK",
    # A real person's mail is retried later by their MTA rather than lost.
    Outcome.RATE_LIMITED: "451 4.7.1 Too many mails from this sender; try again later",
}


STOPPING = "421 4.3.2 Confide is restarting; try again later"


class Handler:
    def __init__(self, addresses: list[str], accept: Accept, accepting: Callable[[], bool]) -> None:
        self.addresses = {a.lower() for a in addresses}
        self.accept = accept
        self.accepting = accepting  # False during a graceful stop: the sending MTA keeps the mail and retries

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if not self.accepting():
            return STOPPING
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
        except Exception:
            log.exception(
                "could not take mail from %s (peer %s); the sender will retry", envelope.mail_from, session.peer
            )
            return "451 4.3.0 Temporary failure; try again later"
        return RESPONSES[outcome]


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
) -> None:
    """Listen until cancelled; while `accepting()` is False, every mail is deferred (421)."""
    loop = asyncio.get_running_loop()
    tls = server_tls_context(settings)
    users = {login: secret.get_secret_value() for login, secret in settings.auth_users.items()}
    handler = Handler(settings.addresses, accept, accepting)
    hostname = settings.from_address.rpartition("@")[2] if settings.from_address else None

    def protocol() -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without STARTTLS; with implicit TLS the whole connection is encrypted.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
            return _smtp()

    def _smtp() -> SMTP:
        return SMTP(
            handler,
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
