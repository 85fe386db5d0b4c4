"""Mail that must never be answered, so that Confide never takes part in a mail loop (RFC 3834).

Auto-replies, bounces, delivery and read reports, list and bulk mail, and Confide's own mail are dropped,
and each sender gets at most `rate_limit_per_hour` answers per hour, which ends a loop that slips past
every header check. `loop_reason` runs before the sender is authenticated, on the header block alone parsed with
compat32 (raw strings, bounded on the raw bytes first: headers.py), in a thread.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from email.message import Message
from email.utils import getaddresses

from adapters.email.mime import header, message_ids

BULK_PRECEDENCE = frozenset({"bulk", "list", "junk", "auto_reply"})
LIST_HEADERS = ("List-Id", "List-Post", "List-Unsubscribe")
AUTOREPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Reply")
DAEMON_LOCALPARTS = frozenset({"mailer-daemon", "postmaster", "noreply", "no-reply", "do-not-reply", "donotreply"})


def loop_reason(msg: Message, envelope_sender: str | None, own_addresses: set[str], own_domain: str) -> str | None:
    """Why this mail must not be answered, or None when it may be."""
    auto = header(msg, "Auto-Submitted").lower()
    if auto and auto.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {auto}"
    if (precedence := header(msg, "Precedence").lower()) in BULK_PRECEDENCE:
        return f"Precedence: {precedence}"
    for name in (*LIST_HEADERS, *AUTOREPLY_HEADERS):
        if header(msg, name):
            return f"{name} header"
    suppress = header(msg, "X-Auto-Response-Suppress").lower()
    if "all" in suppress or "autoreply" in suppress:
        return f"X-Auto-Response-Suppress: {suppress}"
    if msg.get_content_type() == "multipart/report":
        return "delivery or read report (multipart/report)"
    return _bounce_reason(msg, envelope_sender) or _own_reason(msg, own_addresses, own_domain)


def _bounce_reason(msg: Message, envelope_sender: str | None) -> str | None:
    if envelope_sender is not None and envelope_sender.strip("<> ") == "":
        return "null envelope sender (bounce)"
    return_path = header(msg, "Return-Path")
    if msg.get("Return-Path") is not None and return_path.strip("<> ") == "":
        return "empty Return-Path (bounce)"
    for _, address in getaddresses([header(msg, "From"), return_path, envelope_sender or ""]):
        if address.partition("@")[0].lower() in DAEMON_LOCALPARTS:
            return f"sent by {address}"
    return None


def _own_reason(msg: Message, own_addresses: set[str], own_domain: str) -> str | None:
    ids = message_ids(header(msg, "Message-ID"))
    if ids and is_own_message_id(ids[0], own_domain):
        return "Confide's own message"
    for _, address in getaddresses([header(msg, "From"), header(msg, "Sender")]):
        if address.lower() in own_addresses:
            return f"from Confide's own address {address}"
    return None


def is_own_message_id(message_id: str, own_domain: str) -> bool:
    local, _, domain = message_id.strip("<>").rpartition("@")
    return local.startswith("confide.") and domain.lower() == own_domain.lower()


class RateLimit:
    """At most `per_hour` mails per sender in any sliding hour (in memory: a restart forgives)."""

    def __init__(self, per_hour: int) -> None:
        self.per_hour = per_hour
        self._seen: defaultdict[str, deque[float]] = defaultdict(deque)

    def allow(self, sender: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        times = self._seen[sender]
        while times and times[0] <= now - 3600:
            times.popleft()
        if len(times) >= self.per_hour:
            return False
        times.append(now)
        return True

    def forget(self, sender: str) -> None:
        """Give back the last slot (the mail was a duplicate, or could not be stored)."""
        if self._seen[sender]:
            self._seen[sender].pop()
