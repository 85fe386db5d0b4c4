"""Retrieval on LoCoMo: recall@5/10/20 of evidence turns and query latency, through the bot's own retrieval call.

    .venv/bin/python benchmarks/locomo.py --data ../shared/datasets/locomo [--out turns.jsonl]

Each conversation is one person's chat history, imported through the `locomo` importer and the ingestion
driver; every question of categories 1-4 goes through `HistoryIndex.search`, as the answer pipeline asks it.
Recall@k is measured on the context the model would receive: the ranked units are expanded into the turns
they contain, in rank order, the list is cut at k turns, and the share of the question's evidence turns in it
is counted. Two baselines on single turns run in the same process: BM25 (rank-bm25) and dense only (MiniLM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bridge  # noqa: F401  (telemetry off before any model import)
from benchmarks.locomo_import import LocomoImporter, load_questions
from benchmarks.stats import percentile
from bridge.config import EmbedderSettings, RetrievalSettings
from bridge.history.index import HistoryIndex
from bridge.history.ingest import ingest
from bridge.history.store.edge import EdgeStore
from bridge.messages import HistoryRecord
from bridge.models.embedder import PACKAGED, LocalEmbedder

KS = (5, 10, 20)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


def turns_of(record: HistoryRecord) -> list[str]:
    """The dia_ids a retrieval unit puts into the model's context (one per message unit)."""
    members = record.extra.get("members")
    return list(members) if members else [str(record.extra.get("dia_id", record.link))]


def recall(ranked_turns: list[str], evidence: list[str], k: int) -> float:
    return len(set(evidence) & set(ranked_turns[:k])) / len(set(evidence))


async def run_confide(
    files: list[Path], embedder: LocalEmbedder, workdir: Path, settings: RetrievalSettings
) -> list[dict[str, Any]]:
    store = EdgeStore(workdir / "shard", settings.rrf_k)
    history = HistoryIndex(store, embedder)
    await store.open(embedder.dimension)
    rows: list[dict[str, Any]] = []
    try:
        for file in files:
            person = f"locomo-{file.stem}"
            started = time.perf_counter()
            importer = LocomoImporter(file, person)
            summary = await ingest(history, person, importer.items(), chat=importer.chat)
            print(f"  {file.name}: {summary.imported} turns indexed in {time.perf_counter() - started:.1f}s")
            for q in questions_of(file):
                started = time.perf_counter()
                hits = await history.search(person, q["question"], limit=max(KS), candidates=settings.candidates)
                latency = time.perf_counter() - started
                ranked = [turn for hit in hits for turn in turns_of(hit.record)][: max(KS)]
                rows.append({**q, "conversation": file.stem, "turns": ranked, "latency": latency})
    finally:
        await store.close()
    return rows


def questions_of(file: Path) -> list[dict[str, Any]]:
    return [q for q in load_questions(file) if q["category"] in CATEGORIES and q["evidence"]]


def turn_texts(file: Path) -> list[HistoryRecord]:
    return [r for r in LocomoImporter(file, "baseline").items() if isinstance(r, HistoryRecord)]


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def run_baselines(files: list[Path], embedder: LocalEmbedder) -> dict[str, list[dict[str, Any]]]:
    import numpy as np
    from rank_bm25 import BM25Okapi

    out: dict[str, list[dict[str, Any]]] = {"bm25": [], "dense": []}
    encoder = embedder.encoder  # the same packaged MiniLM, used directly: the baseline has no pipeline
    assert encoder is not None
    for file in files:
        records = turn_texts(file)
        ids = [str(r.extra.get("dia_id", r.link)) for r in records]
        texts = [f"{r.author}: {r.text}" for r in records]
        bm25 = BM25Okapi([tokens(t) for t in texts])
        vectors = encoder.encode(texts)
        for q in questions_of(file):
            scores = bm25.get_scores(tokens(q["question"]))
            out["bm25"].append({**q, "turns": [ids[i] for i in np.argsort(-scores)[: max(KS)]]})
            query = encoder.encode([q["question"]])[0]
            out["dense"].append({**q, "turns": [ids[i] for i in np.argsort(-(vectors @ query))[: max(KS)]]})
    return out


def report(name: str, rows: list[dict[str, Any]]) -> None:
    overall = "  ".join(f"R@{k} {statistics.mean(recall(r['turns'], r['evidence'], k) for r in rows):.3f}" for k in KS)
    print(f"{name:<28} {overall}   ({len(rows)} questions)")
    for category, label in CATEGORIES.items():
        subset = [r for r in rows if r["category"] == category]
        if subset:
            figures = "  ".join(
                f"R@{k} {statistics.mean(recall(r['turns'], r['evidence'], k) for r in subset):.3f}" for k in KS
            )
            print(f"    {category} {label:<22} {figures}   ({len(subset)})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of LoCoMo conversation .json files")
    parser.add_argument("--out", type=Path, help="write one JSON line per question with its ranked turns")
    parser.add_argument("--candidates", type=int, help="dense and sparse candidates per vector (default: Confide's)")
    parser.add_argument(
        "--embedder",
        choices=list(PACKAGED),
        help="packaged model (default: Confide's)",
    )
    args = parser.parse_args()
    files = sorted(args.data.glob("*.json"))
    if not files:
        raise SystemExit(f"no .json files in {args.data}")
    embedder = LocalEmbedder(packaged=args.embedder or EmbedderSettings().packaged)
    await embedder.open()
    print(f"embedder: {embedder.identity.describe()}")
    with tempfile.TemporaryDirectory(prefix="confide-locomo-") as workdir:
        print(f"Confide retrieval on {len(files)} conversations:")
        settings = RetrievalSettings()
        if args.candidates:
            settings = settings.model_copy(update={"candidates": args.candidates})
        rows = await run_confide(files, embedder, Path(workdir), settings)
    baselines = run_baselines(files, embedder)
    await embedder.close()
    print()
    report("Confide (hybrid, context)", rows)
    report("baseline BM25, single turns", baselines["bm25"])
    report("baseline dense, single turns", baselines["dense"])
    latencies = [r["latency"] * 1000 for r in rows]
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    print(f"\nquery latency (embed + search): p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    if args.out:
        with args.out.open("w") as out:
            for r in rows:
                line = {key: r[key] for key in ("conversation", "question", "category", "evidence")}
                out.write(json.dumps({**line, "turns": r["turns"][:20]}) + "\n")
        print(f"wrote {len(rows)} lines to {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
