"""What a received mail's header block says, read before its sender is authenticated.

A stranger's mail must cost little, and nothing of it may run on the event loop: every bound is checked on the raw
bytes in linear time (mime.unreadable, mime.too_deep), then only the header block is parsed, with the compat32
policy (values stay the raw strings; the header registry, whose address parser is quadratic, is never reached), and
what the decisions before authentication need is taken out as plain values. The whole mail is parsed only once its
sender is authenticated (adapter.py). The caller runs `read_head` in a thread.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses

from adapters.email import mime

# Headers RFC 5322 (section 3.6) and RFC 2045 allow once (and Content-Disposition, RFC 2183). Python's email reads
# the first of several, DKIM verifies the last: a mail with two is never answered.
SINGLETONS = (
    "from", "sender", "reply-to", "to", "cc", "subject", "message-id", "in-reply-to", "references", "date",
    "content-type", "content-transfer-encoding", "mime-version", "content-disposition",
)  # fmt: skip
_BARE_CR = re.compile(rb"\r(?!\n)")


class Unreadable(Exception):
    """A mail that is not read. `permanent`: refused for good (the sending server bounces it); else dropped."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Bounds:
    max_header_bytes: int
    max_parts: int
    max_address_bytes: int
    max_addresses: int
    max_depth: int


@dataclass(frozen=True)
class MailHead:
    """A mail's header block as plain values."""

    block: bytes  # the raw header block, each line with its line end
    names: tuple[str, ...]  # every header's name, lowercased, top to bottom
    from_addresses: tuple[str, ...]  # the addresses its From names, lowercased
    message_id: str
    msg: Message  # the header block parsed with compat32: raw strings, cheap to read (loops.py, auth.py)

    @property
    def sender(self) -> str | None:
        """The one From address; None unless From names exactly one."""
        return self.from_addresses[0] if len(self.from_addresses) == 1 else None

    @property
    def dkim_signatures(self) -> int:
        return self.names.count("dkim-signature")

    def count(self, name: str) -> int:
        return self.names.count(name.lower())

    def duplicated(self) -> list[str]:
        """The headers allowed once that this mail carries more than once."""
        counts = Counter(self.names)
        return [name for name in SINGLETONS if counts[name] > 1]


def read_head(raw: bytes, bounds: Bounds) -> MailHead:
    """The mail's header block, read within `bounds`; raises Unreadable. CPU work: call it in a thread."""
    if reason := mime.too_deep(raw, bounds.max_depth):
        raise Unreadable(reason, permanent=True)  # first: nesting is refused for good, whatever else is wrong
    if reason := mime.unreadable(
        raw, bounds.max_header_bytes, bounds.max_parts, bounds.max_address_bytes, bounds.max_addresses
    ):
        raise Unreadable(reason)
    found = mime.header_block(raw, bounds.max_header_bytes)
    assert found is not None  # unreadable() said the header ends in time
    block = found[0]
    if _BARE_CR.search(block):
        # Python's parser ends a line at a bare CR, dkimpy does not: the two would read different headers.
        raise Unreadable("a bare CR in its header")
    try:
        msg = BytesHeaderParser(policy=policy.compat32).parsebytes(block + b"\r\n")
        froms = [str(value) for value in msg.get_all("From", [])]
        return MailHead(
            block=block,
            names=tuple(name.lower() for name in msg.keys()),
            from_addresses=tuple(a.lower() for _, a in getaddresses(froms) if "@" in a),
            message_id=_first_id(mime.header(msg, "Message-ID")),
            msg=msg,
        )
    except RecursionError:
        # Comments nested a thousand deep in an address: malformed for good.
        raise Unreadable("a header nested too deeply to read", permanent=True) from None


def _first_id(value: str) -> str:
    ids = mime.message_ids(value)
    return ids[0] if ids else ""
