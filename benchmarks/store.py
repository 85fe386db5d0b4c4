"""The history store at scale: 100k synthetic records, upsert rate and hybrid query p50/p95, both backends.

    .venv/bin/python benchmarks/store.py [--records 100000] [--queries 200] [--server-queries 10]

Records are spread over 10 persons and 300 authors; every query is filtered by one person (as every real query
is) and fuses two dense and two sparse vectors by reciprocal rank, exactly as Confide searches. Timed apart: the
same query with a week's focus (a question naming a date fuses that week's candidates in as well), and listing a
person's authors (the facet a search reads, cached, to know which names a question may use). Dense vectors are random
unit vectors (embedding 200k texts would measure the encoder, not the store); sparse vectors are real BM25
term vectors of synthetic chat lines. The server backend is measured through qdrant-client's local mode (no
Qdrant server binary runs here), which is far slower than a real server: its figure is a floor, not a forecast.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bridge  # noqa: F401
from benchmarks.stats import percentile
from bridge.history.sparse import SparseEncoder
from bridge.history.store import HistoryStore, Selector, Vectorized
from bridge.history.store.edge import EdgeStore
from bridge.history.store.server import ServerStore
from bridge.messages import HistoryRecord

DIMENSION = 384
PERSONS = 10
WORDS = (
    "cabin key boat pier lunch dinner flight Lisbon invoice plumber boiler birthday grandma garden car insurance "
    "school teacher doctor dentist appointment password wifi train station ticket hotel beach rain weekend "
    "meeting project deadline report budget coffee bakery bread cheese wine holiday photo album concert"
).split()
AUTHORS = [f"Author {n}" for n in range(300)]
START = datetime(2020, 1, 1, tzinfo=UTC)


def synthetic(count: int, seed: int = 7) -> list[Vectorized]:
    rng = random.Random(seed)
    vectors = np.random.default_rng(seed).standard_normal((count, 2, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    sparse = SparseEncoder()
    items = []
    for i in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        record = HistoryRecord(
            id=f"r{i}", person=f"p{i % PERSONS}", channel="whatsapp", conversation=f"chat {i % 50}",
            author=rng.choice(AUTHORS), time=START + timedelta(minutes=i), text=text,
            source="synthetic",
        )  # fmt: skip
        term_vector = sparse.document(text)
        items.append(
            Vectorized(
                record,
                {"dense": vectors[i, 0].tolist(), "dense_ctx": vectors[i, 1].tolist()},
                {"sparse": term_vector, "sparse_ctx": term_vector},
            )
        )
    return items


async def measure(name: str, store: HistoryStore, items: list[Vectorized], queries: int) -> None:
    await store.open(DIMENSION)
    by_person: dict[str, list[Vectorized]] = {}
    for item in items:
        by_person.setdefault(item.record.person, []).append(item)
    started = time.perf_counter()
    for person, own in by_person.items():
        for i in range(0, len(own), 1000):
            await store.upsert(person, own[i : i + 1000])
    upsert_s = time.perf_counter() - started
    sparse = SparseEncoder()
    rng = np.random.default_rng(1)
    timings: dict[str, list[float]] = {"hybrid query": [], "hybrid query + a week's focus": [], "authors": []}
    for i in range(queries):
        dense = rng.standard_normal(DIMENSION).astype(np.float32)
        dense /= np.linalg.norm(dense)
        query = sparse.query(f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]}")
        person = f"p{i % PERSONS}"
        since = START + timedelta(days=7 * (i % 9))
        week = Selector(since=since, until=since + timedelta(days=7))
        for label, focus in (("hybrid query", None), ("hybrid query + a week's focus", week)):
            begin = time.perf_counter()
            hits = await store.search(person, dense.tolist(), query, limit=8, candidates=50, focus=focus)
            timings[label].append((time.perf_counter() - begin) * 1000)
            assert all(h.record.person == person for h in hits)
        begin = time.perf_counter()
        authors = await store.authors(person)
        timings["authors"].append((time.perf_counter() - begin) * 1000)
        assert len(authors) == len(AUTHORS)
    await store.close()
    print(f"{name:<34} upsert {len(items) / upsert_s:9.0f} records/s")
    for label, latencies in timings.items():
        p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
        print(f"    {label:<44} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  ({queries}, person-filtered, top 8)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--server-queries", type=int, default=10, help="qdrant-client local mode is slow")
    args = parser.parse_args()
    print(f"building {args.records} synthetic records ...")
    items = synthetic(args.records)
    with tempfile.TemporaryDirectory(prefix="confide-store-") as workdir:
        await measure("embedded (qdrant-edge)", EdgeStore(Path(workdir) / "shard"), items, args.queries)
    from qdrant_client import AsyncQdrantClient

    server = ServerStore(AsyncQdrantClient(location=":memory:"), "bench")
    await measure("server API (qdrant-client local mode)", server, items, args.server_queries)


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message="Payload indexes have no effect")
    asyncio.run(main())
