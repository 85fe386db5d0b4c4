"""The answer pipeline: retrieve from the person's history, prompt the model, stream, cite.

If the model cannot answer, the person still gets the best-matching pieces of their history, clearly
labelled, instead of silence. If the history holds nothing relevant to the question, the model is not asked
at all: given unrelated excerpts it invents an answer, so the person is told plainly that nothing was found.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from bridge.answering.prompt import build_messages
from bridge.answering.support import CITATION_MARK, Support, SupportCheck
from bridge.history.index import HistoryIndex
from bridge.history.sparse import SparseEncoder
from bridge.history.store import CONFIDE_SOURCE_PREFIX, Hit
from bridge.language.catalog import N_, say
from bridge.language.detect import language_of
from bridge.messages import Citation, HistoryRecord
from bridge.models.energy import Energy, EnergyUse, Trace
from bridge.models.llm import Delta, Done, ModelClient, ModelUnavailable, Restart
from bridge.state.chats import Turn
from bridge.state.usage import AnswerUsage

log = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]
# Whose history an answer may use: one person's, or several scopes (a group's own, and histories shared into it).
Scope = str | Sequence[str]
FALLBACK_HEADER = N_("⚠ Model unavailable ({reason}). The best matches in your history:")
FALLBACK_EMPTY = N_("⚠ Model unavailable ({reason}). Nothing in your history matches either. Please try again later.")
NOTHING_FOUND = N_("I found nothing in your history about “{terms}”.")
NOTHING_FOUND_AT_ALL = N_("I found nothing in your history about that.")
MODEL_FAILED = N_("⚠ {model} failed: {reason}")
UNSUPPORTED = N_("⚠ No excerpt of your history says this in so many words: it may be the model's own reading.")
UNKNOWN_AUTHOR = N_("unknown")
KEY_TERMS_CHARS = 120  # a 100 kB question is not quoted back whole
# Words that say how a question is asked, not what it is about: left out of what the reply says it looked for.
_FUNCTION_WORDS = frozenset(
    """a an the and or but of to in on at by for with from about into over after before since until as is are was
    were be been being am do does did done have has had having can could will would shall should may might must
    what when where which who whom whose why how that this these those there here it its it's i me my mine we us
    our you your yours he him his she her hers they them their theirs any some all ever still yet also just not
    no please tell know remember say said anything something if than then so very up out again""".split()
)
_STOP_WORDS = SparseEncoder()  # its tokenizers know each language's stop words


@dataclass(frozen=True)
class Answer:
    text: str
    citations: list[Citation]
    model: str
    usage: Done | None
    fallback: bool
    energy: EnergyUse | None = None
    error: str | None = None  # why the model gave no answer (fallback answers and failed comparisons)
    abstained: bool = False  # no excerpt was relevant enough, so the model was not asked (`nothing_found`)
    trace: Trace | None = None  # power and tokens over the answer's seconds (/compare's chart)
    support: tuple[Support, ...] = ()  # each sentence the model wrote, and the excerpts that say it (SupportCheck)


@dataclass(frozen=True)
class _Generated:
    text: str
    usage: Done | None
    energy: EnergyUse | None
    trace: Trace


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
        self.support = SupportCheck(history.embedder, history.sparse)

    async def answer(
        self,
        scope: Scope,
        person_name: str,
        question: str,
        model: str,
        turns: list[Turn],
        progress: Progress | None = None,
        zone: tzinfo = UTC,
    ) -> Answer:
        """`zone`: the person's time zone, for the dates the model reads."""
        hits = await self.evidence(scope, question)
        if await self.silent(question, hits):
            return nothing_found(question, model)
        messages = build_messages(person_name, question, turns, hits, datetime.now(UTC), zone)
        try:
            generated = await self._generate(model, messages, progress)
        except ModelUnavailable as exc:
            log.error("answering for %s without a model: %s", scope, exc)
            return fallback_answer(hits, model, exc.reason)
        return await self.checked(model, generated, question, hits, zone)

    async def checked(self, model: str, generated: _Generated, question: str, hits: list[Hit], zone: tzinfo) -> Answer:
        """The model's answer as shown: each sentence followed by the excerpts that say it (SupportCheck)."""
        started = time.perf_counter()
        supports = await self.support.check(generated.text, question, hits, zone)
        log.debug("support checked in %.0f ms", (time.perf_counter() - started) * 1000)
        text, citations = shown(generated.text, supports, hits)
        return Answer(
            text, citations, model, generated.usage, False, generated.energy, trace=generated.trace,
            support=tuple(supports),
        )  # fmt: skip

    async def compare(
        self,
        scope: Scope,
        person_name: str,
        question: str,
        models: list[str],
        turns: list[Turn],
        progress: Progress | None = None,
        zone: tzinfo = UTC,
    ) -> list[Answer]:
        """The same question and the same retrieved history to several models at once; one answer each.

        A model that fails gives an answer with `error` set instead of the labelled history fallback:
        the comparison is about the models.
        """
        hits = await self.evidence(scope, question)
        if await self.silent(question, hits):
            return [nothing_found(question, model) for model in models]
        messages = build_messages(person_name, question, turns, hits, datetime.now(UTC), zone)
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
                    scope,
                    model,
                    reason,
                    exc_info=not isinstance(exc, ModelUnavailable),
                )
                return Answer(say(MODEL_FAILED, model=model, reason=reason), [], model, None, True, None, reason)
            return await self.checked(model, generated, question, hits, zone)

        return list(await asyncio.gather(*(one(i, m) for i, m in enumerate(models))))

    async def evidence(self, scope: Scope, question: str) -> list[Hit]:
        """The history the answer may use: never the question itself, asked before in a Confide chat.

        Several scopes (a group's own conversation and the histories shared into it) are searched one by one,
        so every store call still takes one scope, and merged by their fused scores.
        """
        scopes = (scope,) if isinstance(scope, str) else tuple(dict.fromkeys(scope))
        found = await asyncio.gather(
            *(self.history.search(s, question, self.limit + 2, self.candidates) for s in scopes)
        )
        hits = sorted((hit for hits in found for hit in hits), key=lambda hit: hit.score, reverse=True)
        return [hit for hit in hits if not asked_before(hit.record, question)][: self.limit]

    async def silent(self, question: str, hits: list[Hit]) -> bool:
        """Whether the history is silent on the question: none of the evidence is relevant enough to answer from.

        Judged on the evidence that remains (an earlier asking of the question is none), against the history's
        calibrated threshold (CONFIDE_RETRIEVAL__MIN_RELEVANCE; 0: never silent, the model always asked).
        """
        threshold = self.history.min_relevance
        if threshold <= 0:
            return False
        relevance = await self.history.relevance(question, hits)
        if relevance < threshold:
            log.info("nothing relevant in the history (best %.3f < %.3f): the model is not asked", relevance, threshold)
            return True
        return False

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
        return _Generated(text, usage, measurement.use, measurement.trace)


def asked_before(record: HistoryRecord, question: str) -> bool:
    """An earlier asking of this question (or this very message, on a retry), or any other question put to
    Confide: no evidence for an answer. A question shares the words of the next one and so outranks the note
    that answers it, and a small model then cites the question ("you asked this before [2]"). What a person told
    Confide ("my locker code is 4711") is not a question and stays evidence."""
    if not record.source.startswith(CONFIDE_SOURCE_PREFIX):
        return False
    return _words(record.text) == _words(question) or record.text.rstrip().endswith(("?", "？"))


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def nothing_found(question: str, model: str) -> Answer:
    """The plain reply for a question the history is silent on: what was looked for, no citations, no model."""
    terms = key_terms(question)
    text = say(NOTHING_FOUND, terms=terms) if terms else say(NOTHING_FOUND_AT_ALL)
    return Answer(text, [], model, None, False, abstained=True)


def key_terms(question: str) -> str:
    """What the question is about, in its own words: "What is the wifi password at the cabin?" -> "wifi password
    cabin". All its words where every one is a function word; empty where it has none. Beyond English, a function
    word is one the question's own language's tokenizer drops as a stop word ("Wo liegt der Ersatzschlüssel?" ->
    "liegt Ersatzschlüssel")."""
    words = re.findall(r"[\w'’-]+", question)
    language = language_of(question) or "en"
    terms = [word for word in words if not _is_function_word(word.casefold().strip("'’-"), language)]
    text = " ".join(terms or words)
    return text if len(text) <= KEY_TERMS_CHARS else text[: KEY_TERMS_CHARS - 1] + "…"


def _is_function_word(word: str, language: str) -> bool:
    if language == "en":
        return word in _FUNCTION_WORDS
    return not _STOP_WORDS.query(word, language).indices


def shown(text: str, supports: list[Support], hits: list[Hit]) -> tuple[str, list[Citation]]:
    """What the person reads, and what [n] they may tap: the sentences some excerpt says, each followed by those
    excerpts' numbers (whatever numbers the model wrote), and the questions it asks; the others left out. An answer
    none of whose sentences an excerpt says is shown whole, cites nothing, and says so: a citation must hold what
    the sentence says. Without excerpts (the model was told that nothing matched) there is nothing to cite, and
    nothing to say of it."""
    plain = CITATION_MARK.sub("", text).strip()
    if not hits:
        return plain, []
    kept = [support for support in supports if support.supported or support.asks]
    if not any(support.supported for support in kept):
        unsupported = not all(support.asks for support in supports)
        return plain + (f"\n\n{say(UNSUPPORTED)}" if unsupported else ""), []
    claims: dict[int, list[str]] = {}
    for support in kept:
        for number in support.excerpts:
            claims.setdefault(number, []).append(support.sentence)
    body = "".join(
        (support.lead or " ") + f"{support.sentence} {''.join(f'[{n}]' for n in support.excerpts)}".rstrip()
        for support in kept
    ).strip()
    citations = [hits[n - 1].record.citation(n).model_copy(update={"claims": claims[n]}) for n in sorted(claims)]
    return body, citations


def usage_of(answer: Answer) -> AnswerUsage | None:
    """What a model's answer cost; None for a fallback or failed one (no model answered)."""
    return AnswerUsage.of(answer.usage, answer.energy) if answer.usage is not None and not answer.fallback else None


def fallback_answer(hits: list[Hit], model: str, reason: str) -> Answer:
    if not hits:
        return Answer(say(FALLBACK_EMPTY, reason=reason), [], model, None, fallback=True, error=reason)
    citations = [hit.record.citation(n) for n, hit in enumerate(hits[:5], start=1)]
    lines = [say(FALLBACK_HEADER, reason=reason)]
    lines += [f"[{c.number}] {c.author or say(UNKNOWN_AUTHOR)}: {c.excerpt}" for c in citations]
    return Answer("\n".join(lines), citations, model, None, fallback=True, error=reason)
