"""The answer pipeline: retrieve from the person's history, prompt the model, stream, cite.

If the model cannot answer, the person still gets the best-matching pieces of their history, clearly
labelled, instead of silence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.chats import Turn
from bridge.history import HistoryIndex
from bridge.llm import Delta, Done, ModelClient, ModelUnavailable, Restart
from bridge.messages import Citation
from bridge.prompt import build_messages
from bridge.store import Hit

log = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]
FALLBACK_HEADER = "⚠ Model unavailable ({reason}). The best matches in your history:"
_CITE = re.compile(r"\[(\d{1,3})\]")


@dataclass(frozen=True)
class Answer:
    text: str
    citations: list[Citation]
    model: str
    usage: Done | None
    fallback: bool


class AnswerPipeline:
    def __init__(self, history: HistoryIndex, models: ModelClient, limit: int = 8, candidates: int = 50) -> None:
        self.history = history
        self.models = models
        self.limit = limit
        self.candidates = candidates

    async def answer(
        self,
        person: str,
        person_name: str,
        question: str,
        model: str,
        turns: list[Turn],
        progress: Progress | None = None,
    ) -> Answer:
        hits = await self.history.search(person, question, self.limit, self.candidates)
        messages = build_messages(person_name, question, turns, hits, datetime.now(UTC))
        text = ""
        usage: Done | None = None
        try:
            async for event in self.models.stream(model, messages):
                if isinstance(event, Delta):
                    text += event.text
                    if progress is not None:
                        await progress(text)
                elif isinstance(event, Restart):
                    text = ""
                elif isinstance(event, Done):
                    usage = event
        except ModelUnavailable as exc:
            log.error("answering for %s without a model: %s", person, exc)
            return fallback_answer(hits, model, exc.reason)
        text = text.strip() or "(the model returned an empty answer)"
        return Answer(text, cited(text, hits), model, usage, fallback=False)


def cited(text: str, hits: list[Hit]) -> list[Citation]:
    """The excerpts the answer refers to by number; if it names none, the top three it was given."""
    numbers = sorted({int(n) for n in _CITE.findall(text) if 1 <= int(n) <= len(hits)})
    if not numbers:
        numbers = list(range(1, min(3, len(hits)) + 1))
    return [hits[n - 1].record.citation(n) for n in numbers]


def fallback_answer(hits: list[Hit], model: str, reason: str) -> Answer:
    header = FALLBACK_HEADER.format(reason=reason)
    if not hits:
        text = header.replace("The best matches in your history:", "Nothing in your history matches either.")
        return Answer(text + " Please try again later.", [], model, None, fallback=True)
    citations = [hit.record.citation(n) for n, hit in enumerate(hits[:5], start=1)]
    lines = [header] + [f"[{c.number}] {c.author or 'unknown'}: {c.excerpt}" for c in citations]
    return Answer("\n".join(lines), citations, model, None, fallback=True)
