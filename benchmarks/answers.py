"""Grounded answers on LoCoMo: token F1, exact match, citation precision, abstention, time per answer.

    .venv/bin/python benchmarks/answers.py --data ../shared/datasets/locomo --model local [--gguf FILE] \\
        [--limit 20] [--foreign 10] [--seed 0] [--conversations 26,30] [--out answers.jsonl]
    .venv/bin/python benchmarks/answers.py --data ../shared/datasets/locomo --model qwen   # a CONFIDE_MODELS name

Each LoCoMo conversation is one person's history, imported through the `locomo` importer and the ingestion
driver (as benchmarks/locomo.py does); every question then goes through Confide's own answer pipeline
(retrieval, prompt, model, citations) with no earlier turns. `--model local` starts the embedded llama.cpp
server (bridge.models.local_model) with `--gguf` or the installed default model; any other name is a model of
CONFIDE_MODELS. A CPU run takes a seeded sample (`--limit`), a GPU run the whole set (`--limit 0`).

Printed (figures, not a test):
- token F1 and exact match against the gold answer, normalised as in the LoCoMo paper (lower case, no
  punctuation, no articles or "and"; the citation marks are removed from the answer first); "contains" is the
  share of answers whose normalised text holds the whole normalised gold answer (long answers score low F1);
- token F1 per LoCoMo category (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop) with its question count;
- citation precision: the share of cited excerpts (as Confide shows them, after its support check) whose record
  holds an evidence turn; citation recall: the share of answerable questions whose answer cites an evidence turn;
  and the share of answers in which the model itself wrote a citation number;
- supported: the share of the sentences of answers as shown (those not abstaining) that cite an excerpt the
  support check found saying them (bridge/answering/support.py); an answer none of whose sentences an excerpt says
  is shown whole, and counts all of its sentences unsupported;
- abstention: `--foreign N` questions of another conversation asked against this one have no answer in the
  history; an answer abstains when the pipeline says so (`Answer.abstained`) or its text says the history does
  not hold it. The same is counted on the answerable questions, where it should be rare;
- echo: answers that repeat the question (small models do) instead of answering it;
- time per answer, p50 and p95 (retrieval, generation and the support check).

`--limit` draws the answerable questions from all the conversations given (seeded); the last line reads
`answers: F1 x citation precision p citation recall r supported s abstained-foreign a`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import string
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bridge  # noqa: F401  (telemetry off before any model import)
from benchmarks.locomo import questions_of, turns_of
from benchmarks.locomo_import import LocomoImporter
from benchmarks.stats import percentile
from bridge.answering.answer import UNSUPPORTED, AnswerPipeline
from bridge.config import LocalModelSettings, ModelSettings, RetrievalSettings, load_settings
from bridge.history.index import HistoryIndex
from bridge.history.ingest import ingest
from bridge.history.store import Hit
from bridge.history.store.edge import EdgeStore
from bridge.models.embedder import LocalEmbedder
from bridge.models.llm import ModelClient
from bridge.models.local_model import LOCAL_MODEL_NAME, LocalModelServer, packaged_gguf

PERSON_NAME = "Me"
_CITATION_MARK = re.compile(r"\[\d{1,3}\]")
_ARTICLES = re.compile(r"\b(a|an|the|and)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# How models say that the history does not hold the answer (the pipeline's own abstention is counted too).
_ABSTAINS = re.compile(
    r"\b(not (mentioned|found|say|state|specified|provided|contain|include)|no (information|mention|record|excerpt)"
    r"|does(n't| not) (say|mention|contain|include|specify|provide)|nothing (in|about)|(don't|do not) know"
    r"|(cannot|can't|unable to) (find|answer|determine))",
    re.IGNORECASE,
)


@dataclass
class Row:
    conversation: str
    asked_in: str
    question: str
    gold: str
    category: int
    evidence: list[str]
    foreign: bool
    answer: str = ""
    seconds: float = 0.0
    cited_turns: list[list[str]] = field(default_factory=list)
    explicit_citation: bool = False
    abstained: bool = False
    fallback: bool = False
    sentences: int = 0  # sentences of the answer as shown (the support check's note not counted)
    supported: int = 0  # of them, those followed by an excerpt that says them


def model_text(answer: str) -> str:
    """The answer without what Confide adds to an answer no excerpt supports (its note, like the citation marks,
    is no word of the answer; and its "No excerpt ..." would read as abstaining)."""
    return answer.replace(UNSUPPORTED, " ")


def normalize(text: str) -> str:
    """The LoCoMo paper's answer normalisation (SQuAD's, with "and" among the articles)."""
    text = _CITATION_MARK.sub(" ", model_text(str(text))).replace(",", "").lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize(prediction).split(), normalize(gold).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not predicted or not expected or common == 0:
        return float(predicted == expected)
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def echoes(answer: str, question: str) -> bool:
    """The answer repeats the prompt (the question, a new question, the history block) instead of answering."""
    text = answer.strip().lower()
    return text.startswith(("question", "my question", "<history", "[1] ")) or normalize(question) in normalize(answer)


def says_abstain(row: Row) -> bool:
    return row.abstained or bool(_ABSTAINS.search(model_text(row.answer)))


def sample(files: list[Path], limit: int, foreign: int, seed: int) -> list[Row]:
    """A seeded sample of answerable questions, and foreign ones each asked against another conversation."""
    rng = random.Random(seed)
    pool = [
        Row(f.stem, f.stem, q["question"], str(q["answer"]), q["category"], q["evidence"], False)
        for f in files
        for q in questions_of(f)
    ]
    answerable = rng.sample(pool, limit) if 0 < limit < len(pool) else pool
    chosen = {id(r) for r in answerable}
    rest = [r for r in pool if id(r) not in chosen]
    foreign_rows: list[Row] = []
    if len(files) > 1:
        for row in rng.sample(rest, min(foreign, len(rest))):
            other = rng.choice([f.stem for f in files if f.stem != row.conversation])
            foreign_rows.append(Row(other, row.conversation, row.question, row.gold, row.category, [], True))
    return answerable + foreign_rows


@asynccontextmanager
async def open_model(name: str, gguf: Path | None, workdir: Path) -> AsyncIterator[ModelClient]:
    """A CONFIDE_MODELS model by name, or the embedded llama.cpp server started the way Confide starts it."""
    if name != LOCAL_MODEL_NAME:
        models: dict[str, ModelSettings] = load_settings().models
        if name not in models:
            raise SystemExit(f"no model {name!r} in CONFIDE_MODELS (configured: {', '.join(models) or 'none'})")
        client = ModelClient({name: models[name]})
        try:
            yield client
        finally:
            await client.close()
        return
    server = LocalModelServer(LocalModelSettings(gguf_path=gguf), workdir / "local-model.log")
    started = time.perf_counter()
    await server.start()
    print(f"embedded model {server.alias} ready in {time.perf_counter() - started:.1f}s")
    client = ModelClient({name: server.model_settings})
    try:
        yield client
    finally:
        await client.close()
        await server.stop()


async def answer_all(rows: list[Row], files: list[Path], model: str, client: ModelClient, workdir: Path) -> None:
    embedder = LocalEmbedder()
    await embedder.open()
    settings = RetrievalSettings()
    store = EdgeStore(workdir / "shard", settings.rrf_k)
    history = HistoryIndex(store, embedder)
    await store.open(embedder.dimension)
    pipeline = AnswerPipeline(history, client, settings.limit, settings.candidates)
    try:
        for file in files:
            if any(r.conversation == file.stem for r in rows):
                importer = LocomoImporter(file, f"locomo-{file.stem}")
                summary = await ingest(history, f"locomo-{file.stem}", importer.items(), chat=importer.chat)
                print(f"  {file.name}: {summary.imported} turns indexed")
        for number, row in enumerate(rows, start=1):
            await answer_one(pipeline, model, row)
            kind = "foreign" if row.foreign else f"cat {row.category}"
            print(f"  {number}/{len(rows)} ({kind}, {row.seconds:.0f}s) {row.question}\n      -> {row.answer[:160]!r}")
    finally:
        await store.close()
        await embedder.close()


async def answer_one(pipeline: AnswerPipeline, model: str, row: Row) -> None:
    person = f"locomo-{row.conversation}"
    started = time.perf_counter()
    answer = await pipeline.answer(person, PERSON_NAME, row.question, model, [])
    row.seconds = time.perf_counter() - started
    hits: list[Hit] = await pipeline.evidence(person, row.question)  # the excerpts the prompt numbered
    row.answer = answer.text
    row.fallback = answer.fallback
    row.abstained = bool(getattr(answer, "abstained", False))
    # the numbers the model itself wrote (the answer as shown carries the support check's)
    row.explicit_citation = any(1 <= n <= len(hits) for s in answer.support for n in s.cited)
    row.cited_turns = [turns_of(hits[c.number - 1].record) for c in answer.citations if c.number <= len(hits)]
    kept = sum(s.supported for s in answer.support)
    row.sentences, row.supported = (kept, kept) if kept else (len(answer.support), 0)


def share(flags: list[bool]) -> str:
    return f"{sum(flags) / len(flags):.3f} ({sum(flags)}/{len(flags)})" if flags else "n/a"


def report(rows: list[Row], model: str) -> None:
    answerable = [r for r in rows if not r.foreign]
    foreign = [r for r in rows if r.foreign]
    print(f"\nmodel {model}: {len(answerable)} answerable questions, {len(foreign)} foreign")
    if answerable:
        print(f"  token F1        {statistics.mean(token_f1(r.answer, r.gold) for r in answerable):.3f}")
        for category in sorted({r.category for r in answerable}):
            subset = [r for r in answerable if r.category == category]
            f1 = statistics.mean(token_f1(r.answer, r.gold) for r in subset)
            print(f"    category {category}: F1 {f1:.3f} ({len(subset)})")
        print(f"  exact match     {share([normalize(r.answer) == normalize(r.gold) for r in answerable])}")
        print(f"  contains gold   {share([normalize(r.gold) in normalize(r.answer) for r in answerable])}")
        print(f"  citation precision {share(cited_evidence(answerable))} of cited excerpts hold an evidence turn")
        print(f"  citation recall {share(evidence_cited(answerable))} of answers cite an evidence turn")
        supported, total = supported_sentences(answerable)
        shown = f"{supported / total:.3f} ({supported}/{total})" if total else "n/a"
        print(f"  supported       {shown} of answer sentences cite an excerpt that says them")
        print(f"  cites by number {share([r.explicit_citation for r in answerable])}")
        print(f"  abstained       {share([says_abstain(r) for r in answerable])} (should be low)")
        print(f"  echoes question {share([echoes(r.answer, r.question) for r in answerable])}")
        print(f"  model failed    {share([r.fallback for r in answerable])}")
    if foreign:
        print(f"  foreign abstained {share([says_abstain(r) for r in foreign])} (by the gate: "
              f"{share([r.abstained for r in foreign])})")  # fmt: skip
    seconds = [r.seconds for r in rows]
    if seconds:
        print(f"  time per answer p50 {percentile(seconds, 0.5):.1f}s, p95 {percentile(seconds, 0.95):.1f}s")
    print(summary_line(answerable, foreign))


def cited_evidence(rows: list[Row]) -> list[bool]:
    """For each cited excerpt: whether it holds an evidence turn (citation precision)."""
    return [bool(set(turns) & set(r.evidence)) for r in rows for turns in r.cited_turns]


def evidence_cited(rows: list[Row]) -> list[bool]:
    """For each answer: whether it cites an evidence turn (citation recall)."""
    return [bool({t for turns in r.cited_turns for t in turns} & set(r.evidence)) for r in rows]


def supported_sentences(rows: list[Row]) -> tuple[int, int]:
    """Sentences supported, and all sentences, of the answers that do not abstain."""
    claiming = [r for r in rows if not says_abstain(r)]
    return sum(r.supported for r in claiming), sum(r.sentences for r in claiming)


def summary_line(answerable: list[Row], foreign: list[Row]) -> str:
    def ratio(flags: list[bool]) -> str:
        return f"{sum(flags) / len(flags):.3f}" if flags else "n/a"

    f1 = f"{statistics.mean(token_f1(r.answer, r.gold) for r in answerable):.3f}" if answerable else "n/a"
    supported, total = supported_sentences(answerable)
    return (
        f"answers: F1 {f1} citation precision {ratio(cited_evidence(answerable))} "
        f"citation recall {ratio(evidence_cited(answerable))} "
        f"supported {f'{supported / total:.3f}' if total else 'n/a'} "
        f"abstained-foreign {ratio([says_abstain(r) for r in foreign])}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of LoCoMo conversation .json files")
    parser.add_argument("--model", default=LOCAL_MODEL_NAME, help="a CONFIDE_MODELS name, or 'local' (default)")
    parser.add_argument("--gguf", type=Path, help="with --model local: GGUF file (default: the installed model)")
    parser.add_argument("--limit", type=int, default=20, help="answerable questions to sample; 0: all")
    parser.add_argument("--foreign", type=int, default=10, help="questions asked against another conversation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conversations", help="only these files' stems, comma-separated (less to index)")
    parser.add_argument("--out", type=Path, help="write one JSON line per question")
    args = parser.parse_args()
    files = sorted(args.data.glob("*.json"))
    if args.conversations:
        files = [f for f in files if f.stem in args.conversations.split(",")]
    if not files:
        raise SystemExit(f"no .json files in {args.data}")
    rows = sample(files, args.limit, args.foreign, args.seed)
    gguf = args.gguf or (packaged_gguf() if args.model == LOCAL_MODEL_NAME else None)
    label = f"{args.model} ({gguf.name})" if gguf else args.model
    print(f"{len(rows)} questions (seed {args.seed}) for {label}")
    with tempfile.TemporaryDirectory(prefix="confide-answers-") as workdir:
        async with open_model(args.model, gguf, Path(workdir)) as client:
            await answer_all(rows, files, args.model, client, Path(workdir))
    report(rows, label)
    if args.out:
        with args.out.open("w") as out:
            for row in rows:
                out.write(json.dumps(asdict(row) | {"f1": token_f1(row.answer, row.gold)}) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
