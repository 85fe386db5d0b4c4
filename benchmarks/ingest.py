"""Importing 50,000 synthetic WhatsApp messages: messages/s, against the raw encoder on the same texts.

    .venv/bin/python benchmarks/ingest.py [--messages 50000]

The import runs the real path: the WhatsApp importer parses an Android export, the driver adds chat context,
checks which ids exist, embeds and stores into the embedded Qdrant shard. Each message is embedded twice
(alone, and with its neighbours: see bridge/history/context_windows.py), so the raw baseline encodes exactly those
same texts,
in the same batch size, with no parsing or storing; the ratio is the import's overhead over pure encoding.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bridge  # noqa: F401
from bridge.history.context_windows import context_text, with_context
from bridge.history.importers.whatsapp import WhatsAppImporter
from bridge.history.index import HistoryIndex, message_text
from bridge.history.ingest import ingest
from bridge.history.store.edge import EdgeStore
from bridge.messages import HistoryRecord
from bridge.models.embedder import LocalEmbedder

PHRASES = (
    "are we still on for dinner on friday", "the plumber comes at 9", "can you send me the photos from the beach",
    "I booked the flight to Lisbon, gate B12", "don't forget grandma's birthday", "the wifi password is pinecone-42",
    "running late, traffic on the bridge", "what time does the school play start", "I paid the invoice yesterday",
    "let's meet at the bakery near the station", "the car insurance renewal is due in May", "love you, sleep well",
)  # fmt: skip


def write_export(path: Path, count: int) -> None:
    rng = random.Random(3)
    when = datetime(2022, 1, 1, 8, 0)
    with path.open("w", encoding="utf-8") as out:
        out.write("01/01/2022, 08:00 - Messages and calls are end-to-end encrypted.\n")
        for _ in range(count):
            when += timedelta(minutes=rng.randint(1, 240))
            author = rng.choice(["Anna", "Ben"])
            text = rng.choice(PHRASES) + (f" ({rng.randint(1, 999)})" if rng.random() < 0.5 else "")
            out.write(f"{when:%d/%m/%Y, %H:%M} - {author}: {text}\n")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    embedder = LocalEmbedder()
    await embedder.open()
    with tempfile.TemporaryDirectory(prefix="confide-ingest-") as workdir:
        export = Path(workdir) / "WhatsApp Chat with Anna.txt"
        write_export(export, args.messages)
        store = EdgeStore(Path(workdir) / "shard")
        history = HistoryIndex(store, embedder)
        await store.open(embedder.dimension)
        started = time.perf_counter()
        importer = WhatsAppImporter(export, "me", date_order="dmy")
        summary = await ingest(history, "me", importer.items(), chat=importer.chat)
        import_s = time.perf_counter() - started
        await store.close()
        records = [r for r in WhatsAppImporter(export, "me", date_order="dmy").items() if isinstance(r, HistoryRecord)]
    texts = []
    for start in range(0, len(records), 256):  # the driver's batches: each message alone, then with context
        batch = list(with_context(records[start : start + 256], chat=True))
        texts.append([message_text(r) for r in batch] + [context_text(r, 2, 1) for r in batch])
    started = time.perf_counter()
    for batch_texts in texts:
        embedder._encode(batch_texts)
    raw_s = time.perf_counter() - started
    await embedder.close()
    rate, raw_rate = summary.imported / import_s, len(records) / raw_s
    print(f"imported {summary.imported} messages ({summary.problems} problems) in {import_s:.1f}s")
    print(f"import:           {rate:8.1f} messages/s")
    print(f"raw encoder:      {raw_rate:8.1f} messages/s  (the same {2 * len(records)} texts, same batches)")
    print(f"import / raw encoder: {rate / raw_rate:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
