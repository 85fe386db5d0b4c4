"""The remote embedder (backend=openai) against a local server speaking the OpenAI /v1/embeddings wire format:
batches in flight at once, their order kept, timeouts and retries."""

from __future__ import annotations

import openai
import pytest

from bridge.config import EmbedderSettings
from bridge.models.embedder import OpenAIEmbedder, build_embedder
from tests.fakes.openai_server import Behaviour, FakeOpenAI

TEXTS = [f"message number {n} about topic {n % 3}" for n in range(20)]


def embedder_for(server: FakeOpenAI, **fields: object) -> OpenAIEmbedder:
    values: dict[str, object] = {"backend": "openai", "base_url": server.base_url, "model": server.model,
                                 "batch_size": 4, "dimension": 16}  # fmt: skip
    values.update(fields)
    embedder = build_embedder(EmbedderSettings.model_validate(values))
    assert isinstance(embedder, OpenAIEmbedder)
    return embedder


async def test_batches_run_concurrently_up_to_the_limit_and_keep_their_order(fake_llm: FakeOpenAI) -> None:
    fake_llm.embedding_delay_s = 0.3
    embedder = embedder_for(fake_llm, concurrency=3)
    vectors = await embedder.embed_documents(TEXTS)
    one_by_one = [await embedder.embed_query(text) for text in TEXTS[:5]]
    await embedder.close()
    assert len(fake_llm.embedding_requests) == 5 + 5  # 20 texts in batches of 4, then five single queries
    assert all(len(body["input"]) <= 4 for body in fake_llm.embedding_requests)
    assert fake_llm.embedding_peak_in_flight == 3, "batches were not sent concurrently, or over the limit"
    assert vectors[:5] == one_by_one, "a batch's vectors came back out of order"
    assert len(vectors) == len(TEXTS)


async def test_a_batch_that_fails_for_a_moment_is_retried(fake_llm: FakeOpenAI) -> None:
    fake_llm.embedding_script = [Behaviour(status=503), Behaviour(status=429, retry_after=0.2)]
    embedder = embedder_for(fake_llm, retries=2)
    vectors = await embedder.embed_documents(TEXTS[:4])
    await embedder.close()
    assert len(vectors) == 4 and len(fake_llm.embedding_requests) == 3


async def test_a_batch_that_hangs_times_out_instead_of_stalling_an_import(fake_llm: FakeOpenAI) -> None:
    fake_llm.embedding_delay_s = 5.0
    embedder = embedder_for(fake_llm, timeout_s=0.5, retries=0)
    with pytest.raises(openai.APITimeoutError):
        await embedder.embed_documents(TEXTS[:4])
    await embedder.close()
