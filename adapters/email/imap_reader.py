"""Mode 2: read a mailbox over IMAP (aioimaplib), with IDLE and a polling fallback.

Progress is checkpointed by (UIDVALIDITY, last UID). A mail is marked \\Seen, and the checkpoint moved
past it, only after it is in the inbox; a crash in between hands it over again, and the inbox's
idempotent `put` stores it once. Without a checkpoint (first start, or the server renumbered the mailbox)
only UNSEEN mail is taken, so years of old mail are never answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl

from aioimaplib import IMAP4, IMAP4_SSL, STOP_WAIT_SERVER_PUSH, Response

from adapters.email.sender import tls_client_context
from adapters.email.settings import EmailSettings
from adapters.email.smtp_server import Accept, Outcome
from adapters.email.state import EmailState

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 60.0
MAX_BACKOFF_S = 60.0
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapError(Exception):
    pass


class ImapReader:
    def __init__(self, settings: EmailSettings, state: EmailState, accept: Accept) -> None:
        self.settings = settings
        self.state = state
        self.accept = accept
        self.caught_up = asyncio.Event()  # set after each pass over the mailbox (tests wait on it)

    @property
    def where(self) -> str:
        return (
            f"{self.settings.imap_user}@{self.settings.imap_host}:{self.settings.imap_port}/{self.settings.imap_folder}"
        )

    async def run(self) -> None:
        """Read until cancelled, reconnecting with backoff."""
        backoff = 1.0
        while True:
            began = asyncio.get_running_loop().time()
            try:
                await self._session()
            except ssl.SSLCertVerificationError as exc:
                # Never a fallback to plain text: no mail is read until the certificate verifies.
                log.error(
                    "IMAP server %s: TLS certificate verify failed (%s); not reading it until ca_file trusts it",
                    self.where, exc.verify_message or exc,
                )  # fmt: skip
            except Exception:
                log.exception("IMAP session %s failed; reconnecting", self.where)
            if asyncio.get_running_loop().time() - began > MAX_BACKOFF_S:
                backoff = 1.0  # that session was a healthy one: start the backoff over
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _session(self) -> None:
        s = self.settings
        assert s.imap_host and s.imap_user and s.imap_password
        if s.imap_tls:
            client: IMAP4 = IMAP4_SSL(
                s.imap_host, s.imap_port, timeout=COMMAND_TIMEOUT_S, ssl_context=tls_client_context(s)
            )
        else:
            client = IMAP4(s.imap_host, s.imap_port, timeout=COMMAND_TIMEOUT_S)
        try:
            await client.wait_hello_from_server()
            _ok(await client.login(s.imap_user, s.imap_password.get_secret_value()), "LOGIN")
            selected = _ok(await client.select(s.imap_folder), f"SELECT {s.imap_folder}")
            uidvalidity = _uidvalidity(selected)
            idle = client.has_capability("IDLE")
            log.info("reading %s (UIDVALIDITY %d, %s)", self.where, uidvalidity, "IDLE" if idle else "polling")
            while True:
                await self._take_new(client, uidvalidity)
                self.caught_up.set()
                if idle:
                    await self._idle(client)
                else:
                    await asyncio.sleep(s.imap_poll_interval_s)
        finally:
            await _logout(client)

    async def _take_new(self, client: IMAP4, uidvalidity: int) -> None:
        folder = self.settings.imap_folder
        _ok(await client.noop(), "NOOP")  # a selected session sees new mail only after its next command
        checkpoint = await self.state.checkpoint(folder)
        if checkpoint is not None and checkpoint[0] == uidvalidity:
            last = checkpoint[1]
            found = _ok(await client.uid_search(f"UID {last + 1}:*", charset=None), "UID SEARCH")
        else:
            if checkpoint is not None:
                log.warning(
                    "UIDVALIDITY of %s changed (%d -> %d): taking unseen mail", self.where, checkpoint[0], uidvalidity
                )
            last = 0
            found = _ok(await client.uid_search("UNSEEN", charset=None), "UID SEARCH UNSEEN")
        for uid in sorted(u for u in _search_uids(found) if u > last):  # "n:*" always matches the newest mail
            await self._take(client, uid)
            await self.state.save_checkpoint(folder, uidvalidity, uid)

    async def _take(self, client: IMAP4, uid: int) -> None:
        size_response = _ok(await client.uid("fetch", str(uid), "(RFC822.SIZE)"), f"UID FETCH {uid} SIZE")
        size = _size(size_response)
        if size is not None and size > self.settings.max_message_bytes:
            log.warning("mail UID %d in %s is %d bytes, over the limit; not taken", uid, self.where, size)
        else:
            raw = _literal(_ok(await client.uid("fetch", str(uid), "(BODY.PEEK[])"), f"UID FETCH {uid} BODY"))
            outcome = await self.accept(raw, None, None)
            log.debug("mail UID %d in %s: %s", uid, self.where, outcome.value)
            if outcome is Outcome.RATE_LIMITED:
                log.warning("mail UID %d in %s dropped: its sender is over the hourly limit", uid, self.where)
            elif outcome is Outcome.REFUSED:
                # It can never be read: skipped for good (taken again at every pass, it would stop the mailbox).
                log.warning("mail UID %d in %s skipped: it can never be read", uid, self.where)
        # Only now, with the mail in the inbox (or deliberately not taken), is it marked read.
        _ok(await client.uid("store", str(uid), "+FLAGS.SILENT", r"(\Seen)"), f"UID STORE {uid}")

    async def _idle(self, client: IMAP4) -> None:
        """Wait for the server to announce new mail, or for the poll interval (a missed push costs that)."""
        idle = await client.idle_start(timeout=self.settings.imap_poll_interval_s)
        try:
            while client.has_pending_idle():
                push = await client.wait_server_push()
                if push == STOP_WAIT_SERVER_PUSH or any(b"EXISTS" in line for line in push):
                    break
        finally:
            client.idle_done()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(idle, COMMAND_TIMEOUT_S)


def _ok(response: Response, what: str) -> Response:
    if response.result != "OK":
        raise ImapError(f"{what}: {response.result} {b' '.join(bytes(x) for x in response.lines)[:200]!r}")
    return response


def _uidvalidity(response: Response) -> int:
    for line in response.lines:
        if match := _UIDVALIDITY.search(bytes(line)):
            return int(match.group(1))
    raise ImapError("SELECT did not report UIDVALIDITY")


def _search_uids(response: Response) -> list[int]:
    """The UIDs of a UID SEARCH (aioimaplib drops the "SEARCH" word; the last line is the completion)."""
    uids: list[int] = []
    for line in response.lines[:-1]:
        uids.extend(int(word) for word in bytes(line).split() if word.isdigit())
    return uids


def _size(response: Response) -> int | None:
    for line in response.lines:
        if match := _SIZE.search(bytes(line)):
            return int(match.group(1))
    return None


def _literal(response: Response) -> bytes:
    """The message bytes of a FETCH BODY[] response (aioimaplib hands the literal as a bytearray)."""
    for line in response.lines:
        if isinstance(line, bytearray):
            return bytes(line)
    raise ImapError("FETCH returned no message body")


async def _logout(client: IMAP4) -> None:
    try:
        await asyncio.wait_for(client.logout(), 5)
    except Exception as exc:  # the connection may be gone already; there is nothing left to tidy
        log.debug("IMAP logout failed: %r", exc)
