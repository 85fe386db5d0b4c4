"""Who really sent a mail: a valid DKIM signature of the From domain, or a trusted MTA's Authentication-Results.

A From header alone proves nothing, and answering it would hand a person's history to whoever typed their
address. A mail counts as the From address's only if
- it carries a DKIM signature that Confide verifies itself, made by the From domain or a parent of it (relaxed
  alignment), covering the whole body: signatures with `l=` are ignored (text appended after the signed length
  would be read as the question and kept in the person's history). The mail is judged on exactly what was
  verified: a signature counts only if no header it covers (its `h=` tag) appears in the mail more often than it
  lists it (RFC 6376 sections 5.4 and 8.15: DKIM verifies the last occurrences, Python's email reads the first),
  and only if dkimpy and Python's parser read the same headers. Such a signature answers a question. It *proves*
  the sender, the only kind whose mail may change a history (forget, import, confirming), only if it also covers
  Subject and Message-ID, and every one of Content-Type, Content-Transfer-Encoding, Content-Disposition,
  References and In-Reply-To the mail carries: else a replay could re-frame the signed body, re-thread a signed
  "yes", or be taken for a new mail; or
- an Authentication-Results header that a trusted MTA wrote shows dkim=pass for that domain, dmarc=pass with
  header.from of that domain, or spf=pass for an envelope sender in that domain. That is a *vouched* sender:
  answered, but only on another server's word. Which header counts:
  - SMTP mode: Confide is the receiving MTA, so any such header came with the mail and the sender could have
    written it. They are read only when the connecting peer is a configured trusted relay (`trusted_relays`).
  - IMAP mode (and from a trusted relay): only the topmost header whose authserv-id is trusted counts; one further
    down arrived with the mail. The trusted MTA must remove headers with its own id from incoming mail (RFC 8601
    section 5; OpenDMARC, rspamd and authentication_milter do), or a sender could forge the topmost one.
A mail that carries a header allowed once (headers.SINGLETONS) more than once is never answered (adapter.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from typing import Any

import dkim

from adapters.email.headers import MailHead

log = logging.getLogger(__name__)

DnsFunc = Callable[..., bytes | None]
# What a command's authority rests on: signed wherever present (Subject and Message-ID always).
COMMAND_HEADERS = (
    "subject", "message-id", "content-type", "content-transfer-encoding", "content-disposition", "references",
    "in-reply-to",
)  # fmt: skip
ALWAYS_SIGNED = ("subject", "message-id")
MAX_SIGNATURES = 5  # of the From domain verified per mail: each may cost a DNS lookup


@dataclass(frozen=True)
class Verdict:
    authenticated: bool
    how: str  # what vouched for the sender, or why nothing did
    proven: bool = False  # a DKIM signature Confide verified itself (not another server's word), covering commands


@dataclass(frozen=True)
class Signature:
    """A DKIM signature that verified and counts."""

    domain: str
    unsigned: tuple[str, ...]  # headers a command needs signed that it does not cover (none: it proves the sender)

    @property
    def proves(self) -> bool:
        return not self.unsigned


def aligned(signer: str, domain: str) -> bool:
    """True when `signer` is `domain` or a parent of it (DMARC's relaxed alignment, without a suffix list)."""
    signer, domain = signer.lower().rstrip("."), domain.lower().rstrip(".")
    return bool(signer) and "." in signer and (domain == signer or domain.endswith("." + signer))


async def authenticate(
    raw: bytes,
    head: MailHead,
    from_domain: str,
    trusted_authserv_ids: list[str],
    verify_dkim: bool,
    dnsfunc: DnsFunc | None = None,
) -> Verdict:
    """Confide's own DKIM check first (it proves the sender); else a trusted MTA's word (`trusted_authserv_ids`
    empty: no Authentication-Results header is read at all)."""
    refused = "unsigned and not vouched for by a trusted MTA"
    if verify_dkim and head.dkim_signatures:
        # dkimpy is synchronous and may wait on DNS: keep it off the event loop.
        signatures = await asyncio.to_thread(dkim_signatures, raw, head, from_domain, dnsfunc)
        if proving := next((s for s in signatures if s.proves), None):
            return Verdict(True, f"dkim d={proving.domain}", proven=True)
        if signatures:
            first = signatures[0]
            return Verdict(True, f"dkim d={first.domain}, not covering {', '.join(first.unsigned)}")
        refused = f"no valid DKIM signature of {from_domain} that counts"
    if by_results := await asyncio.to_thread(trusted_results, head.msg, from_domain, trusted_authserv_ids):
        return Verdict(True, by_results)
    return Verdict(False, refused)


def dkim_signatures(raw: bytes, head: MailHead, from_domain: str, dnsfunc: DnsFunc | None) -> list[Signature]:
    """The DKIM signatures of the From domain that verify and count. The header signature of each is checked on the
    header block first, so a forged one costs no hash of a body of megabytes."""
    return _signatures(raw, head, from_domain, dnsfunc)


def header_signed(head: MailHead, from_domain: str, dnsfunc: DnsFunc | None) -> bool:
    """Whether a DKIM signature of the From domain that would count holds over the header block (its body hash not
    checked: the body may not have arrived yet)."""
    return bool(_signatures(None, head, from_domain, dnsfunc))


def _signatures(raw: bytes | None, head: MailHead, from_domain: str, dnsfunc: DnsFunc | None) -> list[Signature]:
    """The counting signatures of the From domain: over the whole mail `raw`, or over the header alone (None)."""
    try:
        headers_only = dkim.DKIM(head.block + b"\r\n", logger=log)
    except dkim.DKIMException as exc:
        log.info("DKIM: header block unreadable to dkimpy (%s)", exc)
        return []
    seen = tuple(name.decode("ascii", "replace").lower() for name, _ in headers_only.headers)
    if seen != head.names:
        log.warning("DKIM: dkimpy and Python's parser read different headers; no signature counts")
        return []
    whole: list[Any] = []  # the whole mail parsed for dkimpy, once, when a header signature held
    found: list[Signature] = []
    tried = 0
    for index in range(head.dkim_signatures):
        if tried >= MAX_SIGNATURES:
            log.info("DKIM: more than %d signatures of %s; the rest are not checked", MAX_SIGNATURES, from_domain)
            break
        try:
            signature, checked = _check(raw, head, headers_only, whole, index, from_domain, dnsfunc)
        except Exception as exc:  # a malformed signature or key: that signature does not count, the others may
            log.info("DKIM signature %d does not verify: %s", index, exc)
            tried += 1
            continue
        tried += checked
        if signature is not None:
            found.append(signature)
    return found


def _check(
    raw: bytes | None, head: MailHead, headers_only: Any, whole: list[Any], index: int, from_domain: str,
    dnsfunc: DnsFunc | None,
) -> tuple[Signature | None, bool]:  # fmt: skip
    """Signature `index` if it verifies (over the header alone when `raw` is None) and counts, and whether it was
    verified (cost a DNS lookup) at all."""
    sig, signed, sig_headers = headers_only.verify_headerprep(idx=index)
    domain = bytes(sig[b"d"]).decode("ascii", "replace").lower()
    signed_names = [bytes(name).decode("ascii", "replace") for name in signed if name]
    if not aligned(domain, from_domain):
        log.debug("DKIM signature %d is of %s, not of the From domain %s", index, domain, from_domain)
        return None, False
    if b"l" in sig:
        log.info("DKIM signature of %s ignored: it covers only part of the body (l=)", domain)
        return None, False
    if "from" not in signed_names:
        log.info("DKIM signature of %s ignored: it does not cover From", domain)
        return None, False
    if over := sorted(n for n in set(signed_names) if head.count(n) > signed_names.count(n)):
        log.info("DKIM signature of %s ignored: the mail has more %s headers than it signs", domain, ", ".join(over))
        return None, False
    lookup = dnsfunc or dkim.get_txt
    # The header signature alone first (without bh=, dkimpy skips the body hash): a forgery ends here.
    if not headers_only.verify_sig({k: v for k, v in sig.items() if k != b"bh"}, list(signed), sig_headers[index],
                                   lookup):  # fmt: skip
        log.info("DKIM signature %d of %s does not verify", index, domain)
        return None, True
    if raw is not None:
        if not whole:
            whole.append(dkim.DKIM(raw, logger=log))
        if not whole[0].verify(idx=index, dnsfunc=lookup):
            log.info("DKIM signature %d of %s does not verify over the body", index, domain)
            return None, True
    unsigned = tuple(
        name for name in COMMAND_HEADERS if (name in ALWAYS_SIGNED or head.count(name)) and name not in signed_names
    )
    return Signature(domain, unsigned), True


def trusted_results(msg: Message, domain: str, trusted_ids: list[str]) -> str | None:
    """How a trusted MTA vouched for `domain`, or None. Only the topmost header with a trusted authserv-id is
    read: the trusted MTA added it above everything that came with the mail (RFC 8601 sections 5 and 7.1)."""
    trusted = {t.lower() for t in trusted_ids}
    if not trusted:
        return None
    for value in msg.get_all("Authentication-Results", []):
        authserv_id, parsed = parse_authentication_results(str(value))
        if authserv_id not in trusted:
            continue
        for method, result, props in parsed:
            if result == "pass" and _vouches(method, props, domain):
                return f"{authserv_id}: {method}=pass"
        return None  # a pass in a header further down arrived with the mail: the sender may have written it
    return None


def _vouches(method: str, props: dict[str, str], domain: str) -> bool:
    if method == "dkim":
        signer = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
        return aligned(signer, domain)
    if method == "dmarc":
        return props.get("header.from", "").lower().rstrip(".") == domain.lower()
    if method == "spf":
        mailfrom = props.get("smtp.mailfrom", "")
        return "@" in mailfrom and aligned(mailfrom.rpartition("@")[2], domain)
    return False


def parse_authentication_results(value: str) -> tuple[str, list[tuple[str, str, dict[str, str]]]]:
    """(authserv-id, [(method, result, {property: value})]) of one Authentication-Results header (RFC 8601).
    Semicolons and spaces inside quoted strings and comments separate nothing: an envelope sender such as
    `"x; dmarc=pass header.from=example.test"@evil.test`, copied into spf's smtp.mailfrom, stays one value."""
    head, *parts = _statements(value)
    authserv_id = head[0].lower() if head else ""
    results: list[tuple[str, str, dict[str, str]]] = []
    for tokens in parts:
        if not tokens or "=" not in tokens[0]:
            continue  # "none", or a malformed result
        method, _, result = tokens[0].partition("=")
        props = {}
        for token in tokens[1:]:
            key, sep, prop = token.partition("=")
            if sep:
                props[key.lower()] = _unquoted(prop)
        results.append((method.split("/")[0].lower(), _unquoted(result).lower(), props))
    return authserv_id, results


def _statements(value: str) -> list[list[str]]:
    """The value's tokens, grouped by the semicolons between them: comments (nested too) dropped, quoted strings
    kept whole with their quotes. One pass, linear in the value's length."""
    statements: list[list[str]] = [[]]
    token: list[str] = []
    depth, quoted, escaped = 0, False, False

    def end_token() -> None:
        if token:
            statements[-1].append("".join(token))
            token.clear()

    for char in value:
        if escaped:
            escaped = False
            if not depth:
                token.append(char)
        elif char == "\\" and (quoted or depth):
            escaped = True
            if quoted:
                token.append(char)
        elif quoted:
            token.append(char)
            quoted = char != '"'
        elif depth:
            depth += {"(": 1, ")": -1}.get(char, 0)
        elif char == "(":
            end_token()
            depth = 1
        elif char == '"':
            token.append(char)
            quoted = True
        elif char == ";":
            end_token()
            statements.append([])
        elif char.isspace():
            end_token()
        else:
            token.append(char)
    end_token()
    return statements


def _unquoted(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
