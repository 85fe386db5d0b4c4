"""A person's history: embed, index, search, forget, export. The one door to the history store."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from bridge.answering.question_analysis import (
    date_span,
    name_parts,
    names_asked,
    names_in,
    names_of,
    unknown_names,
    without_names,
)
from bridge.config import RetrievalSettings, Settings
from bridge.history.context_windows import context_text, is_chat, line
from bridge.history.sparse import SparseEncoder
from bridge.history.store import HistoryStore, Hit, IndexIncompatible, Selector, SparseVector, Vectorized
from bridge.language.detect import language_of
from bridge.language.detect import load as load_language_model
from bridge.messages import HistoryRecord
from bridge.models.embedder import (
    LEGACY_EMBEDDER,
    Embedder,
    EmbedderIdentity,
    build_embedder,
    calibrated_gate,
    calibrated_gates,
    ranks_well_alone,
)

log = logging.getLogger(__name__)

# How much of a hit's score its neighbours in the chat receive: evidence often spans adjacent messages.
NEIGHBOUR_SHARE = 0.3
# Questions name people ("what did Anna say about the boat?"): what those people wrote weighs more.
NAMED_AUTHOR_BOOST = 2.0
# How long a person's list of authors is trusted: another process (an import beside a server backend) may add some.
AUTHORS_TTL_S = 60.0
# Question vectors kept for `relevance`: most questions name nobody, so their search embedded the same text.
QUERY_CACHE_SIZE = 64
# The language a paired embedder's first model was trained on (all-MiniLM-L6-v2: English).
STRONGEST_LANGUAGE = "en"
# The relevance of no hits at all: below any threshold (cosines are at least -1).
NO_RELEVANCE = -1.0


class HistoryIndex:
    def __init__(
        self,
        store: HistoryStore,
        embedder: Embedder,
        sparse: SparseEncoder | None = None,
        min_relevance: float | None = None,
    ) -> None:
        """`min_relevance` (default: CONFIDE_RETRIEVAL__MIN_RELEVANCE's) belongs with the embedder: a cosine
        similarity means "relevant" on one model's scale only."""
        self.store = store
        self.embedder = embedder
        self.sparse = sparse or SparseEncoder()
        # None: the gate calibrated for the embedder (CALIBRATED_GATES), known once it is open.
        self._min_relevance = RetrievalSettings().min_relevance if min_relevance is None else min_relevance
        self._authors: dict[str, tuple[float, set[str], set[str]]] = {}  # person -> (when read, authors, names)
        self._queries: OrderedDict[str, list[float]] = OrderedDict()

    @property
    def min_relevance(self) -> float:
        if self._min_relevance is not None:
            return self._min_relevance
        return calibrated_gate(self.embedder.identity)

    @min_relevance.setter
    def min_relevance(self, value: float | None) -> None:
        self._min_relevance = value

    async def open(self) -> None:
        """The embedder, then the index, which only the embedder that built it may search (refused otherwise:
        IndexBuiltByAnother, with the command that brings it over); a new index records whose it is."""
        await self.embedder.open()
        await asyncio.to_thread(load_language_model)  # every record and question is told by it
        identity = self.embedder.identity
        recorded = await self.store.recorded_embedder()
        if recorded is not None:
            refuse_other_embedder(recorded, identity)
        await self.store.open(identity.dimension)
        if recorded != identity.as_dict():
            await self.store.record_embedder(identity.as_dict())

    async def add(self, person: str, records: Sequence[HistoryRecord]) -> int:
        if not records:
            return 0
        alone = [message_text(r) for r in records]
        dense_context = [context_text(r, before=2, after=1) for r in records]
        dense = await self.embedder.embed_documents(alone + dense_context)
        n = len(records)
        return await self._store(person, records, [(dense[i], dense[n + i]) for i in range(n)])

    async def add_asked(self, person: str, record: HistoryRecord) -> int:
        """A question just put to Confide, into `person`'s history (a person's, or a group's).

        Its dense vectors are the question's own query vector, which answering it has just computed (MiniLM
        embeds a query and a document alike): on a CPU the encoder is what limits the live bridge, and this runs
        it once per question instead of three times. A question has no chat neighbours to add context."""
        vector = await self._query_vector(record.text)
        return await self._store(person, [record], [(vector, vector)])

    async def _store(
        self, person: str, records: Sequence[HistoryRecord], dense: Sequence[tuple[list[float], list[float]]]
    ) -> int:
        """Records with their dense vectors (alone, in context), and BM25 vectors of both, into the store."""
        sparse = await asyncio.to_thread(self._terms, records)
        n = len(records)
        items = [
            Vectorized(
                record,
                dense={"dense": dense[i][0], "dense_ctx": dense[i][1]},
                sparse={"sparse": sparse[i], "sparse_ctx": sparse[n + i]},
            )
            for i, record in enumerate(records)
        ]
        stored = await self.store.upsert(person, items)
        if person in self._authors:
            _, authors, names = self._authors[person]
            authors.update(r.author for r in records if r.author)
            names.update(names_of(r.author for r in records if r.author))
        return stored

    def _terms(self, records: Sequence[HistoryRecord]) -> list[SparseVector]:
        """BM25 vectors of each record alone, then in context, each in the record's language (told here once)."""
        for record in records:
            record.language = record.language or language_of(record.text)
        alone = [self.sparse.document(message_text(r), r.language) for r in records]
        in_context = [self.sparse.document(context_text(r, before=1, after=1), r.language) for r in records]
        return alone + in_context

    async def search(
        self,
        person: str,
        text: str,
        limit: int,
        candidates: int = 50,
        selector: Selector | None = None,
        now: datetime | None = None,
    ) -> list[Hit]:
        """The person's history best fitting the question: dense and BM25, alone and in context, fused;
        the time the question names searched as well; neighbours of hits lifted; named authors favoured."""
        names = names_in(text, await self._names(person))
        dense = await self._query_vector(without_names(text, names))
        language = language_of(text)
        sparse = self.sparse.query(text, language)
        span = date_span(text, now or datetime.now(UTC), language)
        focus = (selector or Selector()).narrowed(span.start, span.end) if span else None
        across, alike = self._multilingual_views(dense, language)
        hits = await self.store.search(
            person, dense, sparse, max(limit, candidates), candidates, selector, focus, across=across, alike=alike
        )
        return favour_named_authors(lift_neighbours(hits), text)[:limit]

    def _multilingual_views(
        self, dense: list[float], language: str | None
    ) -> tuple[list[float] | None, list[float] | None]:
        """The query vectors beside `dense` for a paired embedder (HistoryStore.search's `across`, `alike`): its
        multilingual part alone ranks the records in other languages than the question's, where the English half
        only adds noise (multilingual.py: asked in German over an English history, R@1 0.78 with the pair, 0.83
        this way); and, for a question not in English, its own language as well (German notes R@1 0.88 -> 0.91, its
        conversations R@5 0.86 -> 0.94, Spanish ones 0.86 -> 0.91), save in a language the multilingual model ranks
        poorly alone (`ranks_well_alone`: Dutch notes lose, 0.90 -> 0.86). Not for English questions: on English
        LoCoMo the multilingual ranking fused in for every record cost 0.015 of R@10."""
        halves = self.embedder.halves(dense)
        if halves is None:
            return None, None
        multilingual = halves[1]
        if language is None or language == STRONGEST_LANGUAGE:
            return multilingual, None
        return multilingual, (multilingual if ranks_well_alone(self.embedder.identity, language) else None)

    async def relevance(self, question: str, hits: Sequence[Hit]) -> float:
        """How relevant the best of these hits is: its cosine similarity to the whole question, on the gate's
        scale (`min_relevance`); NO_RELEVANCE for none.

        Fused scores are ranks, so they cannot say whether anything matched. The question is compared whole,
        names included (unlike the search's dense query): measured on LoCoMo (benchmarks/abstain.py), a
        question about someone the history never mentions is told apart from an answerable one far better
        that way. Each hit is judged in its own person's history (a scoped search may merge several). A name the
        question writes that neither the excerpts nor their authors mention rules out the excerpts in the
        question's language whatever their likeness (`unknown_names`): outside English the cosine alone tells
        "what did Giulia buy?" over a history without a Giulia from an answerable question far worse
        (benchmarks/multilingual.py).

        With an embedder of two models, an excerpt is judged by the one that reads both texts best (`Gates`), on
        that model's own calibrated scale, brought to the gate's: by the first (English) model alone where question
        and excerpt are English, by the multilingual one alone where they are in different languages (a French
        question and the German note that answers it have nothing in common for MiniLM, and the mean of the two
        would refuse every question asked across languages), by both otherwise.
        """
        if not hits:
            return NO_RELEVANCE
        asked_in = language_of(question)
        # the excerpts' words are gathered only for a question that writes a name: one naming nobody needs none
        named = names_asked(question, asked_in)
        if named and (absent := unknown_names(named, await self._known_words(hits))):
            # an excerpt in another language may write the name otherwise ("Lissabon"): only its likeness can tell
            hits = [hit for hit in hits if hit.record.language not in (None, asked_in)]
            # counted, not named: a log holds no words of a person's question
            log.info("%d name(s) asked unmentioned: %d excerpt(s) in another language judged", len(absent), len(hits))
            if not hits:
                return NO_RELEVANCE
        query = await self._query_vector(question)
        gates = calibrated_gates(self.embedder.identity)
        halves = self.embedder.halves(query)
        judged: dict[str, tuple[list[float], float, list[Hit]]] = {"whole": (query, gates.whole, [])}
        if halves is not None and gates.english:
            judged["english"] = (halves[0], gates.english, [])
        if halves is not None and gates.across:
            judged["across"] = (halves[1], gates.across, [])
        for hit in hits:
            judged[_scale(asked_in, hit.record.language, judged)][2].append(hit)
        scores: list[float] = []
        for vector, gate, judged_hits in judged.values():
            # onto the whole vector's scale, where `min_relevance` (calibrated, or the operator's) is the gate
            scale = gates.whole / gate if gate and gates.whole else 1.0
            scores += [score * scale for score in await self._closeness(vector, judged_hits)]
        return max(scores, default=NO_RELEVANCE)

    async def _known_words(self, hits: Sequence[Hit]) -> list[str]:
        """What these excerpts say and who wrote them, and the names of their histories' authors: where a name the
        question writes must appear for the history to hold its answer."""
        texts = [" ".join(await self._names(person)) for person in {hit.record.person for hit in hits}]
        for hit in hits:
            record = hit.record
            around = record.neighbours
            texts += [record.text, record.author, record.conversation or ""]
            texts += [*around.before, *around.after] if around else []
        return texts

    async def _closeness(self, vector: list[float], hits: Sequence[Hit]) -> list[float]:
        by_person: dict[str, list[str]] = {}
        for hit in hits:
            by_person.setdefault(hit.record.person, []).append(hit.record.id)
        closeness = await asyncio.gather(*(self.store.closeness(p, vector, ids) for p, ids in by_person.items()))
        return [score for scores in closeness for score in scores.values()]

    async def _query_vector(self, text: str) -> list[float]:
        """The query embedding of `text`, remembered for a few questions (search and relevance both need it)."""
        if (vector := self._queries.get(text)) is not None:
            self._queries.move_to_end(text)
            return vector
        vector = await self.embedder.embed_query(text)
        self._queries[text] = vector
        if len(self._queries) > QUERY_CACHE_SIZE:
            self._queries.popitem(last=False)
        return vector

    async def authors(self, person: str) -> set[str]:
        """Who wrote in the person's history; read from the store at most once a minute."""
        return (await self._author_cache(person))[1]

    async def _names(self, person: str) -> set[str]:
        return (await self._author_cache(person))[2]

    async def _author_cache(self, person: str) -> tuple[float, set[str], set[str]]:
        cached = self._authors.get(person)
        if cached is None or time.monotonic() - cached[0] > AUTHORS_TTL_S:
            authors = await self.store.authors(person)
            cached = (time.monotonic(), authors, names_of(authors))
            self._authors[person] = cached
        return cached

    async def existing(self, person: str, record_ids: Sequence[str]) -> set[str]:
        return await self.store.existing(person, record_ids)

    async def forget(self, person: str, selector: Selector) -> int:
        deleted = await self.store.delete(person, selector)
        self._authors.pop(person, None)  # read again: the forgotten may have been someone's only messages
        return deleted

    async def count(self, person: str, selector: Selector | None = None) -> int:
        return await self.store.count(person, selector)

    def export(self, person: str) -> AsyncIterator[HistoryRecord]:
        return self.store.export(person)

    async def close(self) -> None:
        await self.store.close()
        await self.embedder.close()


def message_text(record: HistoryRecord) -> str:
    """What a record is found by: who said it matters ("what did Anna say about ..."), and outside chats
    the subject or file name says what the text is about."""
    if is_chat(record):
        return line(record)
    return f"{record.conversation}\n{line(record)}" if record.conversation else line(record)


def _scale(asked_in: str | None, written_in: str | None, scales: dict[str, Any]) -> str:
    """Which model judges an excerpt written in `written_in` for a question asked in `asked_in` (HistoryIndex
    .relevance): "english", "across" or "whole", among the `scales` the embedder has."""
    if asked_in and written_in and asked_in != written_in and "across" in scales:
        return "across"
    if asked_in == STRONGEST_LANGUAGE and written_in in (None, STRONGEST_LANGUAGE) and "english" in scales:
        return "english"
    return "whole"


def lift_neighbours(hits: list[Hit]) -> list[Hit]:
    """Give the chat neighbours of each candidate a share of its fused score, then re-rank."""
    scores = {hit.record.id: hit.score for hit in hits}
    for hit in hits:
        around = hit.record.neighbours
        for neighbour in (around.prev, around.next) if around else ():
            if neighbour in scores:
                scores[neighbour] += NEIGHBOUR_SHARE * hit.score
    lifted = [replace(hit, score=scores[hit.record.id]) for hit in hits]
    return sorted(lifted, key=lambda h: h.score, reverse=True)


def favour_named_authors(hits: list[Hit], question: str) -> list[Hit]:
    """Multiply the score of hits whose author the question names (by any part of the name), then re-rank."""
    words = set(re.findall(r"\w+", question.lower()))
    boosted = [
        replace(hit, score=hit.score * NAMED_AUTHOR_BOOST) if name_parts(hit.record.author) & words else hit
        for hit in hits
    ]
    return sorted(boosted, key=lambda h: h.score, reverse=True)


class IndexBuiltByAnother(IndexIncompatible):
    """The index holds another embedder's vectors: `confide reindex` re-embeds it with this one."""


def refuse_other_embedder(recorded: dict[str, Any], identity: EmbedderIdentity) -> None:
    """IndexBuiltByAnother unless the index's vectors are this embedder's ({}: an index from before indexes
    recorded it, which the packaged MiniLM built)."""
    built_by = EmbedderIdentity.from_dict(recorded) if recorded else LEGACY_EMBEDDER
    if built_by == identity:
        return
    raise IndexBuiltByAnother(
        f"your history's index was built with the embedding model {built_by.describe()}, and this Confide embeds "
        f"with {identity.describe()}: their vectors cannot be compared, so nothing was searched or changed. Run  "
        f"confide reindex  to re-embed your history with {identity.name} (it can be stopped and resumed, and the "
        "old index stays until the new one is complete), or set CONFIDE_EMBEDDER__* back to the model that built it."
    )


def build_store(settings: Settings) -> HistoryStore:
    if settings.store.backend == "server":
        from bridge.history.store.server import ServerStore

        return ServerStore.connect(settings.store, settings.retrieval.rrf_k)
    from bridge.history.store.edge import EdgeStore

    return EdgeStore(settings.shard_path, settings.retrieval.rrf_k)


def build_history(settings: Settings) -> HistoryIndex:
    return HistoryIndex(
        build_store(settings),
        build_embedder(settings.embedder, settings.proxy_url),
        min_relevance=settings.retrieval.min_relevance,
    )
