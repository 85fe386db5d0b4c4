"""Email: the SMTP and IMAP adapters, and the mbox/Maildir importers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.email.adapter import EmailAdapter
    from bridge.config import Settings


def build_adapter(settings: Settings) -> EmailAdapter:
    """The email adapter for `confide serve` (SMTP server and/or IMAP mailbox, replies through the relay)."""
    from adapters.email.adapter import EmailAdapter

    return EmailAdapter(settings)
