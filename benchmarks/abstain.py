"""Calibrating the relevance gate on LoCoMo: when does the history hold nothing about a question?

    .venv/bin/python benchmarks/abstain.py --data ../shared/datasets/locomo [--keep DIR] [--goal-foreign 0.9]

Each conversation is one person's history, imported through the `locomo` importer and the ingestion driver (as
benchmarks/locomo.py does). Every question of categories 1-4 is asked against its own conversation
(answerable), and against every other conversation (foreign: that history does not hold the answer). Each
question goes through the answer pipeline's own evidence and relevance calls (`AnswerPipeline.evidence`,
`HistoryIndex.relevance`), without a model: the relevance of a question is the cosine similarity between the
whole question and its best excerpt.

Printed (figures, not a test): the whole trade-off curve (threshold -> share of foreign questions abstained
on, share of answerable questions abstained on), the threshold that abstains on the most foreign questions
while abstaining on at most 5% of the answerable ones, whether it reaches the goal (>= 90% of foreign ones),
and the figures of the configured default (CONFIDE_RETRIEVAL__MIN_RELEVANCE). `--keep DIR` keeps the index
in DIR and reuses it on the next run (indexing takes minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bridge  # noqa: F401  (telemetry off before any model import)
from benchmarks.locomo import questions_of
from benchmarks.locomo_import import LocomoImporter
from bridge.answering.answer import AnswerPipeline
from bridge.config import EmbedderSettings, RetrievalSettings
from bridge.history.index import HistoryIndex
from bridge.history.ingest import ingest
from bridge.history.store.edge import EdgeStore
from bridge.models.embedder import PACKAGED, LocalEmbedder, calibrated_gate
from bridge.models.llm import ModelClient

MAX_ANSWERABLE_ABSTAINED = 0.05  # the bound: abstain on at most 5% of answerable questions
CURVE_STEP = 0.02


@dataclass(frozen=True)
class Asked:
    person: str  # the history asked
    conversation: str  # the conversation the question belongs to
    category: int
    relevance: float

    @property
    def answerable(self) -> bool:
        return self.person == f"locomo-{self.conversation}"


async def index_all(history: HistoryIndex, files: list[Path]) -> None:
    """Each conversation into its own person's history; what a kept index holds already is skipped by `ingest`."""
    for file in files:
        person = f"locomo-{file.stem}"
        started = time.perf_counter()
        importer = LocomoImporter(file, person)
        summary = await ingest(history, person, importer.items(), chat=importer.chat)
        print(f"  {file.name}: {summary.describe()} ({time.perf_counter() - started:.1f}s)")


async def ask_all(pipeline: AnswerPipeline, files: list[Path]) -> list[Asked]:
    """Every question against every conversation's history: its own (answerable) and the others (foreign)."""
    asked: list[Asked] = []
    for history_file in files:
        person = f"locomo-{history_file.stem}"
        started = time.perf_counter()
        for question_file in files:
            for q in questions_of(question_file):
                hits = await pipeline.evidence(person, q["question"])
                relevance = await pipeline.history.relevance(q["question"], hits)
                asked.append(Asked(person, question_file.stem, q["category"], relevance))
        print(f"  asked {person}: {time.perf_counter() - started:.1f}s")
    return asked


def abstained(rows: list[Asked], threshold: float) -> float:
    """The share of these questions the gate abstains on at this threshold."""
    return sum(r.relevance < threshold for r in rows) / len(rows)


def best_threshold(answerable: list[Asked], foreign: list[Asked]) -> float:
    """The threshold that abstains on the most foreign questions while keeping answerable abstention in bounds."""
    candidates = sorted({r.relevance for r in answerable + foreign})
    allowed = [t for t in candidates if abstained(answerable, t) <= MAX_ANSWERABLE_ABSTAINED]
    return max(allowed, key=lambda t: (abstained(foreign, t), -t)) if allowed else 0.0


def print_curve(answerable: list[Asked], foreign: list[Asked]) -> None:
    low = min(r.relevance for r in answerable + foreign)
    high = max(r.relevance for r in answerable + foreign)
    print(f"\n{'threshold':>9}  {'foreign abstained':>17}  {'answerable abstained':>20}")
    threshold = round(max(0.0, low) / CURVE_STEP) * CURVE_STEP
    while threshold <= high + CURVE_STEP:
        print(f"{threshold:9.2f}  {abstained(foreign, threshold):17.1%}  {abstained(answerable, threshold):20.1%}")
        threshold = round(threshold + CURVE_STEP, 6)


def print_point(label: str, threshold: float, answerable: list[Asked], foreign: list[Asked]) -> None:
    print(
        f"{label}: threshold {threshold:.3f} abstains on {abstained(foreign, threshold):.1%} of foreign questions "
        f"and {abstained(answerable, threshold):.1%} of answerable ones"
    )


def report(asked: list[Asked], goal_foreign: float, default: float) -> None:
    answerable = [r for r in asked if r.answerable]
    foreign = [r for r in asked if not r.answerable]
    print(f"\n{len(answerable)} answerable questions, {len(foreign)} foreign ones (each asked of every other history)")
    print(
        f"relevance (cosine of the whole question to its best excerpt): answerable median "
        f"{statistics.median(r.relevance for r in answerable):.3f}, foreign median "
        f"{statistics.median(r.relevance for r in foreign):.3f}"
    )
    print_curve(answerable, foreign)
    chosen = best_threshold(answerable, foreign)
    print()
    print_point("best with <= 5% answerable abstained", chosen, answerable, foreign)
    reached = abstained(foreign, chosen) >= goal_foreign
    verdict = "reached" if reached else "NOT reached"
    print(f"goal (>= {goal_foreign:.0%} of foreign abstained, <= 5% of answerable): {verdict}")
    print_point("configured default (the embedder's calibrated gate)", default, answerable, foreign)
    print("\nat the default, per history asked (foreign abstained / answerable abstained):")
    for person in sorted({r.person for r in asked}):
        own = [r for r in answerable if r.person == person]
        other = [r for r in foreign if r.person == person]
        print(f"  {person}: {abstained(other, default):.1%} / {abstained(own, default):.1%}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of LoCoMo conversation .json files")
    parser.add_argument("--keep", type=Path, help="keep the index in this folder and reuse it on the next run")
    parser.add_argument("--goal-foreign", type=float, default=0.9, help="share of foreign questions to abstain on")
    parser.add_argument(
        "--embedder",
        choices=list(PACKAGED),
        help="packaged model (default: ours)",
    )
    args = parser.parse_args()
    files = sorted(args.data.glob("*.json"))
    if len(files) < 2:
        raise SystemExit(f"need at least two .json conversations in {args.data}")
    settings = RetrievalSettings()
    embedder = LocalEmbedder(packaged=args.embedder or EmbedderSettings().packaged)
    await embedder.open()
    print(f"embedder: {embedder.identity.describe()}")
    with tempfile.TemporaryDirectory(prefix="confide-abstain-") as workdir:
        store = EdgeStore((args.keep or Path(workdir)) / "shard", settings.rrf_k)
        history = HistoryIndex(store, embedder)
        await store.open(embedder.dimension)
        pipeline = AnswerPipeline(history, ModelClient({}), settings.limit, settings.candidates)
        try:
            print(f"indexing {len(files)} conversations:")
            await index_all(history, files)
            print("asking every question of every conversation:")
            asked = await ask_all(pipeline, files)
        finally:
            await store.close()
    await embedder.close()
    default = settings.min_relevance if settings.min_relevance is not None else calibrated_gate(embedder.identity)
    report(asked, args.goal_foreign, default)


if __name__ == "__main__":
    asyncio.run(main())
