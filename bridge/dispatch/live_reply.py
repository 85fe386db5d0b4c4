"""A reply as it grows: a typing notice, then partial edits while a model streams."""

from __future__ import annotations

import logging
import time

from bridge.dispatch.inbox import Claimed
from bridge.dispatch.outbox import Drafts
from bridge.intake.adapter import Adapter
from bridge.messages import IncomingMessage

log = logging.getLogger(__name__)


class LiveReply:
    """Shows the growing text at most once per the adapter's edit interval, and remembers the message being
    edited (in the state database), so the final reply, even after a restart, replaces that same message."""

    def __init__(
        self, adapter: Adapter, message: IncomingMessage, token: str | None, drafts: Drafts, inbox_id: int
    ) -> None:
        self.adapter = adapter
        self.message = message
        self.token = token
        self.drafts = drafts
        self.inbox_id = inbox_id
        self._last = 0.0

    @classmethod
    async def start(cls, adapter: Adapter, claimed: Claimed, drafts: Drafts) -> LiveReply:
        """Tell the person we are working on it; a draft shown before a restart is edited on."""
        live = cls(adapter, claimed.message, await drafts.get(claimed.inbox_id), drafts, claimed.inbox_id)
        try:
            await adapter.typing(claimed.message)
        except Exception:
            log.warning("typing notice failed in %s", claimed.message.chat_key, exc_info=True)
        return live

    async def update(self, text: str) -> None:
        capabilities = self.adapter.capabilities
        if not capabilities.can_edit or time.monotonic() - self._last < capabilities.edit_interval_s:
            return
        self._last = time.monotonic()
        try:
            token = await self.adapter.show_partial(self.message, text, self.token)
        except Exception:
            # A lost partial edit costs nothing: the final reply always replaces it.
            log.warning("partial update failed in %s", self.message.chat_key, exc_info=True)
            return
        if token and token != self.token:
            self.token = token
            await self.drafts.save(self.inbox_id, token)
