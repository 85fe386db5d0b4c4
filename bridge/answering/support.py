"""Which excerpt says what an answer says: every sentence of a model's answer checked, after generation, against the
excerpts the model was given, so that each [n] a person taps shows a message that says it.

A small model cites the excerpt it read first or last as readily as the one that holds the fact (benchmarks/
answers.py: before this check, 26% of the excerpts cited held an evidence turn). The check uses what the pipeline
already has, no second model call: the BM25 terms of each record's own language, and the embedder.

- A sentence's claim is what it adds to the question: its terms that the question does not have ("Joanna is
  allergic to reptiles and fur" asked "What is Joanna allergic to?" claims "reptiles", "fur"). Every excerpt
  retrieved for the question shares the question's words, so only the new ones tell the excerpt that says it.
- An excerpt supports a sentence when it holds enough of the claim's terms and reads like the sentence
  (`Score.value`); the best one is cited, where it reaches SUPPORTED.
- A sentence that adds no terms (a restatement) is judged by likeness alone, and so is a sentence in another
  language than the excerpt (a French answer over a German note), by the multilingual model alone.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, tzinfo

from bridge.answering.prompt import as_read, dated_text
from bridge.history.sparse import SparseEncoder
from bridge.history.store import Hit
from bridge.language.detect import language_of
from bridge.models.embedder import Embedder

CITATION_MARK = re.compile(r"\[(\d{1,3})\]")  # [2], as the prompt asks the model to cite
_CITE = re.compile(r"\s*" + CITATION_MARK.pattern)
# A sentence ends at . ! ? (or a line break) followed by space; citation marks after the stop belong to it.
_SENTENCE = re.compile(r".+?(?:[.!?…]+(?:\s*\[\d{1,3}\])*(?=\s|$)|\n|$)", re.DOTALL)
# How the score weighs the claim's terms an excerpt holds against its likeness to the sentence (both 0..1).
TERMS_WEIGHT = 0.6
# Least score for an excerpt to support a sentence.
SUPPORTED = 0.45


@dataclass(frozen=True)
class Support:
    """One sentence of an answer, as shown without citation marks, and the excerpts (1-based) that say it."""

    sentence: str
    excerpts: tuple[int, ...]
    cited: tuple[int, ...] = ()  # the numbers the model itself wrote after it
    lead: str = ""  # what stood before it: a space, or line breaks kept when sentences are left out

    @property
    def supported(self) -> bool:
        return bool(self.excerpts)

    @property
    def asks(self) -> bool:
        """A question ("Do you mean the cabin's key?") claims nothing: there is nothing to support or cite."""
        return self.sentence.rstrip(" \"'”»)").endswith(("?", "？"))


def sentences(text: str) -> list[tuple[str, tuple[int, ...]]]:
    """The answer's sentences, each without its citation marks, with the numbers it cited."""
    return [(sentence, numbers) for _, sentence, numbers in _pieces(text)]


def _pieces(text: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """Each sentence with the white space before it and the numbers it cited."""
    found: list[tuple[str, str, tuple[int, ...]]] = []
    lead = ""
    for match in _SENTENCE.finditer(text):
        piece = match[0]
        numbers = tuple(int(n) for n in _CITE.findall(piece))
        sentence = _CITE.sub("", piece).strip()
        if not re.search(r"\w", sentence):
            if numbers and found:  # marks on their own line or after a closing quote: the sentence before's
                before, previous, cited = found[-1]
                found[-1] = (before, previous, cited + numbers)
            lead += re.sub(r"[^\n]", "", piece)  # the line breaks between paragraphs
            continue
        space = piece[: len(piece) - len(piece.lstrip())]
        found.append(((lead + space) if found else "", sentence, numbers))
        lead = "\n" if piece.endswith("\n") else ""
    return found


class SupportCheck:
    """Scores each sentence of an answer against each excerpt; the embedder and the BM25 tokenizers are the
    pipeline's own (HistoryIndex's), so nothing new is loaded."""

    def __init__(self, embedder: Embedder, sparse: SparseEncoder) -> None:
        self.embedder = embedder
        self.sparse = sparse

    async def check(self, answer: str, question: str, hits: Sequence[Hit], zone: tzinfo = UTC) -> list[Support]:
        """Each sentence of `answer`, and which of `hits` (numbered from 1 as the prompt in `zone` gave them) say it."""
        parts = _pieces(answer)
        if not parts or not hits:
            return [Support(sentence, (), cited, lead) for lead, sentence, cited in parts]
        scores = await self.scores([sentence for _, sentence, _ in parts], question, hits, zone)
        rows = zip(parts, scores, strict=True)
        supports = [Support(sentence, chosen(row), cited, lead) for (lead, sentence, cited), row in rows]
        # a question the answer asks gets no excerpt: it claims nothing
        return [replace(s, excerpts=()) if s.asks else s for s in supports]

    async def scores(
        self, claims: Sequence[str], question: str, hits: Sequence[Hit], zone: tzinfo = UTC
    ) -> list[list[Score]]:
        """Each claim against each excerpt as the model read it (its date and author too), in the excerpts' order."""
        texts = [as_read(hit.record, zone) for hit in hits]
        vectors = await self.embedder.embed_documents([*claims, *texts])
        claim_vectors, excerpt_vectors = vectors[: len(claims)], vectors[len(claims) :]
        asked_in = language_of(question)
        languages = [language_of(claim) or asked_in for claim in claims]
        written = [hit.record.language for hit in hits]
        own_texts = await self._across(languages, written, hits, zone)
        asked = self._terms(question, asked_in)
        excerpt_terms = await asyncio.to_thread(
            lambda: [self._terms(text, language) for text, language in zip(texts, written, strict=True)]
        )
        table = []
        for claim, language, claim_vector in zip(claims, languages, claim_vectors, strict=True):
            new = self._terms(claim, language) - asked
            halves = self.embedder.halves(claim_vector)
            row = []
            for index, (terms, vector) in enumerate(zip(excerpt_terms, excerpt_vectors, strict=True)):
                if halves is not None and _across(language, written[index]):
                    row.append(Score(None, _cosine(halves[1], own_texts[index])))
                else:
                    row.append(Score(_share(new, terms), _cosine(claim_vector, vector)))
            table.append(row)
        return table

    async def _across(
        self, languages: Sequence[str | None], written: Sequence[str | None], hits: Sequence[Hit], zone: tzinfo
    ) -> list[list[float]]:
        """The excerpts' own texts embedded, where a sentence is in another language than some excerpt: a sentence
        and an excerpt in two languages share no terms, and are judged by the multilingual model alone, on the
        excerpt's text without its header (whose date, in English, draws a German note away from a French sentence
        that says it: USE's cosine 0.33 with the header, 0.51 without; a different fact on the topic 0.33-0.37)."""
        if not any(_across(language, other) for language in languages for other in written):
            return []
        return await self.embedder.embed_documents([dated_text(hit.record, zone) for hit in hits])

    def _terms(self, text: str, language: str | None) -> frozenset[int]:
        return frozenset(self.sparse.query(text, language).indices)


@dataclass(frozen=True)
class Score:
    terms: float | None  # share of the claim's new terms the excerpt holds; None: the sentence adds none
    likeness: float  # cosine of sentence and excerpt

    @property
    def value(self) -> float:
        if self.terms is None:
            return self.likeness
        return TERMS_WEIGHT * self.terms + (1 - TERMS_WEIGHT) * self.likeness


def chosen(row: Sequence[Score]) -> tuple[int, ...]:
    """The excerpt (1-based) that supports a sentence best, where it reaches SUPPORTED; none where none does.

    One per sentence: on LoCoMo a second excerpt holding the claim's terms the best one lacks (a sentence joining
    two facts) was an evidence turn less often than not, and cost 0.09 of citation precision."""
    best = max(range(len(row)), key=lambda i: row[i].value)
    return (best + 1,) if row[best].value >= SUPPORTED else ()


def _across(language: str | None, written: str | None) -> bool:
    return language is not None and written is not None and language != written


def _share(new: frozenset[int], terms: frozenset[int]) -> float | None:
    return len(new & terms) / len(new) if new else None


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
