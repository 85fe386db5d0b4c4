"""Email's settings section: CONFIDE_EMAIL__*."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, IPvAnyNetwork, SecretStr, model_validator

from bridge.intake.platforms import section

if TYPE_CHECKING:
    from bridge.config import Settings


_MOVED = {"max_header_bytes": "max_mail_header_bytes", "max_mime_parts": "max_mime_parts"}


class EmailSettings(BaseModel):
    # Receiving, mode 1: Confide's own SMTP server (aiosmtpd), directly or behind an MTA.
    smtp_enabled: bool = False
    smtp_listen: str = "127.0.0.1"
    smtp_port: int = Field(2525, ge=1, le=65535)
    addresses: list[str] = Field(default_factory=list, description="Addresses Confide receives mail for")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    implicit_tls: bool = False
    auth_required: bool = False
    auth_users: dict[str, SecretStr] = Field(default_factory=dict, description="SMTP AUTH logins (only over TLS)")
    max_message_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    # Receiving, mode 2: a mailbox over IMAP (aioimaplib).
    imap_enabled: bool = False
    imap_host: str | None = None
    imap_port: int = Field(993, ge=1, le=65535)
    imap_tls: bool = True
    imap_user: str | None = None
    imap_password: SecretStr | None = None
    imap_folder: str = "INBOX"
    imap_poll_interval_s: float = Field(60.0, gt=0)
    # Sending replies through a relay (aiosmtplib).
    relay_host: str | None = None
    relay_port: int = Field(587, ge=1, le=65535)
    relay_security: Literal["starttls", "tls", "none"] = "starttls"
    relay_user: str | None = None
    relay_password: SecretStr | None = None
    from_address: str | None = None
    # Who vouches for a sender: DKIM of the sender's domain, or these MTAs' Authentication-Results.
    trusted_authserv_ids: list[str] = Field(default_factory=list)
    trusted_relays: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="SMTP mode: addresses (or networks) of the MTAs in front of Confide whose Authentication-Results "
        "headers are read; from any other peer they are ignored, since the sender could have written them",
    )
    # Read before a mail is parsed: bounds that keep a hostile mail from stalling the server. A mail's header
    # bytes and MIME parts are bounded once for every mail, received or imported: CONFIDE_IMPORTS__*.
    max_address_header_bytes: int = Field(
        8 * 1024, ge=256, description="Bytes of one address header (To, Cc, Sender...); a larger one: dropped unread"
    )
    max_addresses: int = Field(
        100, ge=1, description="Addresses one address header may name (counted by its commas); more: dropped unread"
    )
    max_mime_depth: int = Field(
        50,
        ge=1,
        description="Multipart and message parts a mail may declare, which bounds how deep it nests; "
        "more: refused for good (554), the sending server bounces it",
    )
    parse_budget_s: float = Field(10.0, gt=0, description="Most seconds one mail may take to read")
    # How much mail is taken at once: a flood of strangers' mail must not starve a person's or exhaust memory.
    max_receiving: int = Field(
        4,
        ge=1,
        description="SMTP mails arriving (DATA) at once from strangers, and as many again from persons' addresses "
        "(envelope senders); a mail held unread beyond its first MiB when it could never be answered gives its place "
        "back",
    )
    max_receiving_per_peer: int = Field(
        2, ge=1, description="Of those, from one client address (trusted relays excepted); more wait as for a place"
    )
    max_reading: int = Field(2, ge=1, description="Mails read and authenticated at once (SMTP and IMAP)")
    max_reading_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes of the mails read at once (one mail is always let in alone, whatever its size)",
    )
    busy_wait_s: float = Field(
        10.0, ge=0, description="How long an SMTP mail waits for its turn before 451 4.3.2 (the sender retries)"
    )
    verify_dkim: bool = Field(True, description="Check DKIM signatures (DNS TXT lookups of sender domains)")
    rate_limit_per_hour: int = Field(20, ge=1)
    ca_file: Path | None = Field(None, description="CA bundle for the relay's and IMAP server's certificates")

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        """A bound that moved is named, not silently ignored: the operator meant it to hold."""
        if isinstance(data, dict):
            for old, new in _MOVED.items():
                if old in data:
                    raise ValueError(
                        f"CONFIDE_EMAIL__{old.upper()} is now CONFIDE_IMPORTS__{new.upper()}: one bound "
                        "for every mail, received or imported"
                    )
        return data

    @model_validator(mode="after")
    def _complete(self) -> EmailSettings:
        if (self.smtp_enabled or self.imap_enabled) and not (self.relay_host and self.from_address):
            raise ValueError("email needs relay_host and from_address to send replies")
        if self.imap_enabled and not (self.imap_host and self.imap_user and self.imap_password):
            raise ValueError("IMAP mode needs imap_host, imap_user and imap_password")
        if self.auth_required and not self.tls_cert:
            raise ValueError("auth_required needs tls_cert and tls_key: AUTH is only offered over TLS")
        return self


def email_settings(settings: Settings) -> EmailSettings:
    """The email section of the whole settings, typed."""
    return section(settings, "email", EmailSettings)
