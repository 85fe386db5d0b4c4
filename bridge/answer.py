"""The answer pipeline: retrieve from the person's history, prompt the model, stream, cite.

If the model cannot answer, the person still gets the best-matching pieces of their history, clearly
labelled, instead of silence.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.chats import Turn
from bridge.energy import Energy, EnergyUse
from bridge.history import HistoryIndex
from bridge.llm import Delta, Done, ModelClient, ModelUnavailable, Restart
from bridge.messages import Citation
from bridge.prompt import build_messages
from bridge.store import Hit
from bridge.usage import AnswerUsage

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
    energy: EnergyUse | None = None
    error: str | None = None  # why the model gave no answer (fallback answers and failed comparisons)


@dataclass(frozen=True)
class _Generated:
    text: str
    usage: Done | None
    energy: EnergyUse | None


class AnswerPipeline:
    def __init__(
        self,
        history: HistoryIndex,
        models: ModelClient,
        limit: int = 8,
        candidates: int = 50,
        energy: Energy | None = None,
    ) -> None:
        self.history = history
        self.models = models
        self.limit = limit
        self.candidates = candidates
        self.energy = energy or Energy(None, {})

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
        try:
            generated = await self._generate(model, messages, progress)
        except ModelUnavailable as exc:
            log.error("answering for %s without a model: %s", person, exc)
            return fallback_answer(hits, model, exc.reason)
        return Answer(generated.text, cited(generated.text, hits), model, generated.usage, False, generated.energy)

    async def compare(
        self,
        person: str,
        person_name: str,
        question: str,
        models: list[str],
        turns: list[Turn],
        progress: Progress | None = None,
    ) -> list[Answer]:
        """The same question and the same retrieved history to several models at once; one answer each.

        A model that fails gives an answer with `error` set instead of the labelled history fallback:
        the comparison is about the models.
        """
        hits = await self.history.search(person, question, self.limit, self.candidates)
        messages = build_messages(person_name, question, turns, hits, datetime.now(UTC))
        shown: dict[int, str] = {}

        async def one(index: int, model: str) -> Answer:
            async def partial(text: str) -> None:
                shown[index] = text
                if progress is not None:
                    await progress("\n\n".join(f"── {models[i]} ──\n{shown[i]}" for i in sorted(shown)))

            try:
                generated = await self._generate(model, messages, partial)
            except Exception as exc:  # one model's failure must not hide the other's answer
                reason = exc.reason if isinstance(exc, ModelUnavailable) else f"{type(exc).__name__}: {exc}"
                log.error(
                    "comparison for %s: model %s failed: %s",
                    person,
                    model,
                    reason,
                    exc_info=not isinstance(exc, ModelUnavailable),
                )
                return Answer(f"⚠ {model} failed: {reason}", [], model, None, True, None, reason)
            return Answer(generated.text, cited(generated.text, hits), model, generated.usage, False, generated.energy)

        return list(await asyncio.gather(*(one(i, m) for i, m in enumerate(models))))

    async def _generate(self, model: str, messages: list[dict[str, str]], progress: Progress | None) -> _Generated:
        """Stream one model's answer, metering the energy of the GPUs that serve it."""
        text = ""
        usage: Done | None = None
        async with self.energy.measure(model) as measurement:
            async for event in self.models.stream(model, messages):
                if isinstance(event, Delta):
                    measurement.add_tokens(1)  # vLLM streams about one token per chunk
                    text += event.text
                    if progress is not None:
                        await progress(text)
                elif isinstance(event, Restart):
                    text = ""
                elif isinstance(event, Done):
                    usage = event
        text = text.strip() or "(the model returned an empty answer)"
        return _Generated(text, usage, measurement.use)


def cited(text: str, hits: list[Hit]) -> list[Citation]:
    """The excerpts the answer refers to by number; if it names none, the top three it was given."""
    numbers = sorted({int(n) for n in _CITE.findall(text) if 1 <= int(n) <= len(hits)})
    if not numbers:
        numbers = list(range(1, min(3, len(hits)) + 1))
    return [hits[n - 1].record.citation(n) for n in numbers]


def usage_of(answer: Answer) -> AnswerUsage | None:
    """What a model's answer cost; None for a fallback or failed one (no model answered)."""
    return AnswerUsage.of(answer.usage, answer.energy) if answer.usage is not None and not answer.fallback else None


def fallback_answer(hits: list[Hit], model: str, reason: str) -> Answer:
    header = FALLBACK_HEADER.format(reason=reason)
    if not hits:
        text = header.replace("The best matches in your history:", "Nothing in your history matches either.")
        return Answer(text + " Please try again later.", [], model, None, fallback=True, error=reason)
    citations = [hit.record.citation(n) for n, hit in enumerate(hits[:5], start=1)]
    lines = [header] + [f"[{c.number}] {c.author or 'unknown'}: {c.excerpt}" for c in citations]
    return Answer("\n".join(lines), citations, model, None, fallback=True, error=reason)
