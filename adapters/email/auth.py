"""Who really sent a mail: a valid DKIM signature of the From domain, or a trusted MTA's Authentication-Results.

A From header alone proves nothing, and answering it would hand a person's history to whoever typed their
address. A mail counts as the From address's only if
- it carries a DKIM signature that Confide verifies itself, made by the From domain or a parent of it (relaxed
  alignment), covering the whole body (signatures with `l=` are ignored: content could be appended after them).
  That is a *proven* sender, the only kind whose mail may change a history (forget, import, confirming); or
- an Authentication-Results header that a trusted MTA wrote shows dkim=pass for that domain, dmarc=pass with
  header.from of that domain, or spf=pass for an envelope sender in that domain. That is a *vouched* sender:
  answered, but only on another server's word. Which header counts:
  - SMTP mode: Confide is the receiving MTA, so any such header came with the mail and the sender could have
    written it. They are read only when the connecting peer is a configured trusted relay (`trusted_relays`).
  - IMAP mode (and from a trusted relay): only the topmost header whose authserv-id is trusted counts; one further
    down arrived with the mail. The trusted MTA must remove headers with its own id from incoming mail (RFC 8601
    section 5; OpenDMARC, rspamd and authentication_milter do), or a sender could forge the topmost one.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message

import dkim

log = logging.getLogger(__name__)

DnsFunc = Callable[..., bytes | None]
_COMMENT = re.compile(r"\([^()]*\)")


@dataclass(frozen=True)
class Verdict:
    authenticated: bool
    how: str  # what vouched for the sender, or why nothing did
    proven: bool = False  # a DKIM signature Confide verified itself (not another server's word)


def aligned(signer: str, domain: str) -> bool:
    """True when `signer` is `domain` or a parent of it (DMARC's relaxed alignment, without a suffix list)."""
    signer, domain = signer.lower().rstrip("."), domain.lower().rstrip(".")
    return bool(signer) and "." in signer and (domain == signer or domain.endswith("." + signer))


async def authenticate(
    raw: bytes,
    msg: Message,
    from_domain: str,
    trusted_authserv_ids: list[str],
    verify_dkim: bool,
    dnsfunc: DnsFunc | None = None,
) -> Verdict:
    """Confide's own DKIM check first (it proves the sender); else a trusted MTA's word (`trusted_authserv_ids`
    empty: no Authentication-Results header is read at all)."""
    refused = "unsigned and not vouched for by a trusted MTA"
    if verify_dkim and msg.get_all("DKIM-Signature"):
        # dkimpy is synchronous and may wait on DNS: keep it off the event loop.
        signers = await asyncio.to_thread(dkim_signers, raw, len(msg.get_all("DKIM-Signature", [])), dnsfunc)
        if any(aligned(signer, from_domain) for signer in signers):
            return Verdict(True, f"dkim d={next(s for s in signers if aligned(s, from_domain))}", proven=True)
        refused = f"no valid DKIM signature of {from_domain} (valid signers: {signers or 'none'})"
    if by_results := trusted_results(msg, from_domain, trusted_authserv_ids):
        return Verdict(True, by_results)
    return Verdict(False, refused)


def dkim_signers(raw: bytes, count: int, dnsfunc: DnsFunc | None) -> list[str]:
    """The d= domains of the DKIM signatures that verify over the whole body."""
    signers: list[str] = []
    for index in range(count):
        verifier = dkim.DKIM(raw, logger=log)
        try:
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc) if dnsfunc else verifier.verify(idx=index)
        except dkim.DKIMException as exc:
            log.info("DKIM signature %d does not verify: %s", index, exc)
            continue
        if not ok or verifier.domain is None:
            continue
        if _has_length_limit(verifier.signature_fields):
            log.info("DKIM signature of %s ignored: it covers only part of the body (l=)", verifier.domain)
            continue
        signers.append(verifier.domain.decode("ascii", "replace").lower())
    return signers


def _has_length_limit(fields: dict[bytes, bytes] | None) -> bool:
    return bool(fields) and b"l" in fields  # type: ignore[operator]


def trusted_results(msg: Message, domain: str, trusted_ids: list[str]) -> str | None:
    """How a trusted MTA vouched for `domain`, or None. Only the topmost header with a trusted authserv-id is
    read: the trusted MTA added it above everything that came with the mail (RFC 8601 sections 5 and 7.1)."""
    trusted = {t.lower() for t in trusted_ids}
    if not trusted:
        return None
    for value in msg.get_all("Authentication-Results", []):
        authserv_id, results = parse_authentication_results(str(value))
        if authserv_id not in trusted:
            continue
        for method, result, props in results:
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
    """(authserv-id, [(method, result, {property: value})]) of one Authentication-Results header (RFC 8601)."""
    while _COMMENT.search(value):
        value = _COMMENT.sub(" ", value)
    head, *parts = value.split(";")
    words = head.split()
    authserv_id = words[0].lower() if words else ""
    results: list[tuple[str, str, dict[str, str]]] = []
    for part in parts:
        tokens = part.split()
        if not tokens or "=" not in tokens[0]:
            continue  # "none", or a malformed result
        method, _, result = tokens[0].partition("=")
        props = {}
        for token in tokens[1:]:
            key, sep, prop = token.partition("=")
            if sep:
                props[key.lower()] = prop.strip('"')
        results.append((method.split("/")[0].lower(), result.lower(), props))
    return authserv_id, results
