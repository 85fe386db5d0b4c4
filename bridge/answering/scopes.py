"""A group's scopes: its own conversation plus the histories shared into it (AnswerPipeline searches them one
by one, so every store call still takes one scope)."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.history.index import HistoryIndex


async def holds_anything(history: HistoryIndex, scopes: Sequence[str]) -> bool:
    """Whether any of these scopes holds a record: a group whose scopes hold none cannot answer anything."""
    for scope in scopes:
        if await history.count(scope) > 0:
            return True
    return False
