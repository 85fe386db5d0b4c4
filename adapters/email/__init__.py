"""Email: the SMTP and IMAP adapters, and the mbox/Maildir importers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.email.settings import EmailSettings
from adapters.email.state import MIGRATIONS
from bridge.intake.platforms import Endpoint, Platform, configured

if TYPE_CHECKING:
    from adapters.email.adapter import EmailAdapter
    from bridge.config import Settings


def build_adapter(settings: Settings) -> EmailAdapter:
    """The email adapter for `confide serve` (SMTP server and/or IMAP mailbox, replies through the relay)."""
    from adapters.email.adapter import EmailAdapter

    return EmailAdapter(settings)


def _enabled(own: EmailSettings) -> bool:
    return own.smtp_enabled or own.imap_enabled


def _endpoints(own: EmailSettings) -> list[Endpoint]:
    found: list[Endpoint] = []
    if own.imap_enabled and own.imap_host:
        found.append(configured("email imap", f"imap://{own.imap_host}:{own.imap_port}"))
    if own.relay_host:
        found.append(configured("email relay", f"smtp://{own.relay_host}:{own.relay_port}"))
    if own.verify_dkim:
        # Not a host of ours: DKIM keys are TXT records of each sender's domain, asked of the system resolver.
        why = "DKIM keys of senders' domains; CONFIDE_EMAIL__VERIFY_DKIM=false stops these lookups"
        found.append(Endpoint("email dkim", "dns: <selector>._domainkey.<sender domain> TXT", "", True, why))
    return found


def _normalize(address: str) -> str:
    # Mail addresses compare case-insensitively in practice; other platforms' ids are case-sensitive.
    return address.lower()


PLATFORM = Platform(
    name="email",
    settings=EmailSettings,
    build=build_adapter,
    enabled=_enabled,
    endpoints=_endpoints,
    normalize_address=_normalize,
    migrations=MIGRATIONS,
)
