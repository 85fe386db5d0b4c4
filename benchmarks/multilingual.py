"""Retrieval across languages: the same history and the same questions in en, it, de, fr, es, nl.

    .venv/bin/python benchmarks/multilingual.py [--data benchmarks/data/multilingual.json] [--embedders A,B]

Each language's version of the history (benchmarks/data/multilingual.json: 80 everyday notes and messages,
written for this benchmark, with look-alikes on purpose: three keys, two passwords, two appointments) is imported
as one person's history, through HistoryIndex itself (dense vectors, BM25 in each record's language, the question's
time phrases). Every question is asked in every language over every history. Recall@k: the note that answers it is
among the first k hits. Same-language is asked and written in one language; cross-language asks in one and searches
a history written in another. Old and new embedder run side by side in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bridge  # noqa: F401  (telemetry off before any model import)
from bridge.history.context_windows import with_context
from bridge.history.index import HistoryIndex
from bridge.history.store.edge import EdgeStore
from bridge.messages import HistoryRecord
from bridge.models.embedder import LocalEmbedder, calibrated_gate

DATA = Path(__file__).resolve().parent / "data" / "multilingual.json"
CHATS = Path(__file__).resolve().parent / "data" / "multilingual_chats.json"
# Asked across languages in the chats' gate: the pairs the issue names, and one without English.
CHATS_ACROSS = (("en", "de"), ("de", "en"), ("it", "de"))
KS = (1, 5)
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def records(items: list[dict[str, Any]], language: str, person: str) -> list[HistoryRecord]:
    return [
        HistoryRecord(
            id=item["id"], person=person, channel="files", conversation=f"notes-{language}", author="",
            time=T0 + timedelta(hours=i), text=item["text"][language], source=f"files:notes-{language}.txt",
        )
        for i, item in enumerate(items)
    ]  # fmt: skip


async def recalls(embedder: LocalEmbedder, items: list[dict[str, Any]], languages: list[str], workdir: Path) -> dict:
    """(asked in, history in) -> {k: recall@k}."""
    store = EdgeStore(workdir / embedder.packaged, rrf_k=10)
    await store.open(embedder.dimension)
    history = HistoryIndex(store, embedder)
    try:
        for language in languages:
            await history.add(f"p-{language}", records(items, language, f"p-{language}"))
        found: dict[tuple[str, str], dict[int, float]] = {}
        for written in languages:
            for asked in languages:
                hits_at: dict[int, list[bool]] = {k: [] for k in KS}
                for item in items:
                    for question in item["questions"]:
                        hits = await history.search(f"p-{written}", question[asked], limit=max(KS))
                        ranked = [h.record.id for h in hits]
                        for k in KS:
                            hits_at[k].append(item["id"] in ranked[:k])
                found[(asked, written)] = {k: statistics.mean(hits_at[k]) for k in KS}
        return found
    finally:
        await store.close()


async def gate(embedder: LocalEmbedder, items: list[dict[str, Any]], languages: list[str], workdir: Path) -> None:
    """The relevance gate per language: each language's history holds the even-numbered notes only; questions
    about them are answerable, questions about the odd-numbered ones foreign (their notes are nowhere in it, though
    a look-alike may be: another key, another appointment). Asked in the history's language, and in every other
    one. Printed at the embedder's calibrated gate, and the gate that refuses at most 5% of the answerable."""
    store = EdgeStore(workdir / f"gate-{embedder.packaged}", rrf_k=10)
    await store.open(embedder.dimension)
    history = HistoryIndex(store, embedder)
    threshold = calibrated_gate(embedder.identity)
    print(f"  gate {threshold:.3f}: foreign abstained / answerable refused, and the gate refusing <= 5% answerable")
    relevance: dict[tuple[bool, bool], list[float]] = {}  # (same language, answerable) -> relevances
    try:
        for written in languages:
            person = f"g-{written}"
            await history.add(person, records(items[::2], written, person))
            for asked in languages:
                for index, item in enumerate(items):
                    for question in item["questions"]:
                        hits = await history.search(person, question[asked], limit=8)
                        found = await history.relevance(question[asked], hits)
                        relevance.setdefault((asked == written, index % 2 == 0), []).append(found)
    finally:
        await store.close()
    for same, label in ((True, "same language"), (False, "across languages")):
        answerable, foreign = relevance[(same, True)], relevance[(same, False)]
        best = sorted(answerable)[len(answerable) // 20]  # refuses the 5% least relevant answerable ones
        print(
            f"    {label}: {_below(foreign, threshold):.1%} / {_below(answerable, threshold):.1%} at {threshold:.3f}; "
            f"{_below(foreign, best):.1%} / {_below(answerable, best):.1%} at {best:.3f}"
        )


def chat_records(conversation: dict[str, Any], language: str, person: str) -> list[HistoryRecord]:
    """A conversation as a chat export gives it: one record per message, with its neighbours."""
    speakers = conversation["speakers"]
    plain = [
        HistoryRecord(
            id=f"{conversation['id']}-{i:03d}", person=person, channel="chat", conversation=" & ".join(speakers),
            author=speakers[message["speaker"]], time=T0 + timedelta(minutes=7 * i), text=message["text"][language],
            source=f"chat:{conversation['id']}",
        )
        for i, message in enumerate(conversation["messages"])
    ]  # fmt: skip
    return list(with_context(plain, chat=True))


async def gate_chats(embedder: LocalEmbedder, chats: dict[str, Any], workdir: Path) -> dict[str, tuple[float, float]]:
    """The relevance gate on LoCoMo's protocol, in every language (benchmarks/data/multilingual_chats.json: eight
    conversations of two people each, written for this benchmark): each conversation is a person's history, its
    questions answerable, the questions of the seven others foreign. Asked in the history's language, and across
    the pairs in CHATS_ACROSS. Also recall@5 of the message that answers. Returns (asked, written) -> (foreign
    abstained, answerable refused) at the calibrated gate."""
    languages, conversations = chats["languages"], chats["conversations"]
    store = EdgeStore(workdir / f"chats-{embedder.packaged}", rrf_k=10)
    await store.open(embedder.dimension)
    history = HistoryIndex(store, embedder)
    threshold = calibrated_gate(embedder.identity)
    pairs = [(lang, lang) for lang in languages] + [p for p in CHATS_ACROSS if p[0] in languages and p[1] in languages]
    relevance: dict[tuple[str, str, bool], list[float]] = {}
    found: dict[tuple[str, str], list[bool]] = {}
    try:
        for written in {w for _, w in pairs}:
            for conversation in conversations:
                person = f"chat-{written}-{conversation['id']}"
                await history.add(person, chat_records(conversation, written, person))
        for asked, written in pairs:
            for conversation in conversations:
                person = f"chat-{written}-{conversation['id']}"
                for other in conversations:
                    for question in other["questions"]:
                        hits = await history.search(person, question["text"][asked], limit=8)
                        answerable = other is conversation
                        score = await history.relevance(question["text"][asked], hits)
                        relevance.setdefault((asked, written, answerable), []).append(score)
                        if answerable:
                            wanted = {f"{other['id']}-{i:03d}" for i in question["answer"]}
                            found.setdefault((asked, written), []).append(
                                bool(wanted & {h.record.id for h in hits[:5]})
                            )
    finally:
        await store.close()
    print(f"  chats (LoCoMo's protocol), gate {threshold:.3f}: R@5, foreign abstained / answerable refused")
    figures: dict[str, tuple[float, float]] = {}
    for asked, written in pairs:
        foreign, answerable = relevance[(asked, written, False)], relevance[(asked, written, True)]
        figures[f"{asked}>{written}" if asked != written else asked] = (
            _below(foreign, threshold),
            _below(answerable, threshold),
        )
        label = asked if asked == written else f"asked in {asked} over {written}"
        print(
            f"    {label}: R@5 {statistics.mean(found[(asked, written)]):.2f}, "
            f"{_below(foreign, threshold):.1%} / {_below(answerable, threshold):.1%}"
        )
    return figures


def _below(values: list[float], threshold: float) -> float:
    return sum(v < threshold for v in values) / len(values)


def report(name: str, found: dict[tuple[str, str], dict[int, float]], languages: list[str]) -> None:
    print(f"\n{name}")
    print("  same language:  " + "  ".join(f"{lang} R@1 {found[(lang, lang)][1]:.3f} R@5 {found[(lang, lang)][5]:.3f}"
                                         for lang in languages))  # fmt: skip
    cross = [pair for pair in found if pair[0] != pair[1]]
    for k in KS:
        print(f"  cross-language R@{k}: mean {statistics.mean(found[p][k] for p in cross):.3f}, "
              f"worst {min(found[p][k] for p in cross):.3f} ({min(cross, key=lambda p: found[p][k])})")  # fmt: skip
    for asked, written in (("en", "de"), ("de", "en"), ("it", "de"), ("en", "it")):
        if (asked, written) in found:
            figures = found[(asked, written)]
            print(f"  asked in {asked} over a {written} history: R@1 {figures[1]:.3f} R@5 {figures[5]:.3f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--chats", type=Path, default=CHATS)
    parser.add_argument("--embedders", default="minilm,multilingual-use,minilm+multilingual-use", help="old first")
    args = parser.parse_args()
    data = json.loads(args.data.read_text(encoding="utf-8"))
    items, languages = data["items"], data["languages"]
    questions = sum(len(item["questions"]) for item in items)
    print(f"{len(items)} notes, {questions} questions, in {', '.join(languages)}")
    chats = json.loads(args.chats.read_text(encoding="utf-8"))
    results: dict[str, dict[tuple[str, str], dict[int, float]]] = {}
    gates: dict[str, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="confide-multilingual-") as workdir:
        for name in args.embedders.split(","):
            embedder = LocalEmbedder(packaged=name)
            await embedder.open()
            try:
                results[name] = await recalls(embedder, items, languages, Path(workdir))
                report(embedder.identity.describe(), results[name], languages)
                await gate(embedder, items, languages, Path(workdir))
                gates[name] = await gate_chats(embedder, chats, Path(workdir))
            finally:
                await embedder.close()
    last = results[args.embedders.split(",")[-1]]
    same = ", ".join(f"{lang} R@1 {last[(lang, lang)][1]:.2f}" for lang in languages)
    cross = [p for p in last if p[0] != p[1]]
    print(f"multilingual: {same}, cross R@1 {statistics.mean(last[p][1] for p in cross):.2f} "
          f"(en>de {last[('en', 'de')][1]:.2f}, de>en {last[('de', 'en')][1]:.2f})")  # fmt: skip
    chat_gate = gates[args.embedders.split(",")[-1]]
    print("gate: " + ", ".join(f"{key} {ab:.0%}/{refused:.0%}" for key, (ab, refused) in chat_gate.items()))


if __name__ == "__main__":
    asyncio.run(main())
