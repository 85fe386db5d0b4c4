"""A Qdrant server or cluster as the history store: the collection's layout, the search parameters it implies, and
a client that retries what a cluster answers while it moves shards or restarts a node.

The layout follows Qdrant's own guidance (README, "Qdrant as a cluster"): shards and replicas spread a collection
over nodes; a write is confirmed by `write_consistency_factor` replicas; original vectors and payloads may live on
disk while int8 quantized vectors stay in memory and the best candidates are rescored with the originals; and, for
many persons, one HNSW graph per person (`payload_m`, with the person's field indexed as the tenant) instead of one
over everyone (`m=0`), since every search of Confide names its person.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, cast

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from bridge.config import StoreSettings

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_S = 8.0


def dense_params(size: int, layout: StoreSettings) -> models.VectorParams:
    return models.VectorParams(size=size, distance=models.Distance.COSINE, on_disk=layout.on_disk_vectors or None)


def collection_layout(layout: StoreSettings) -> dict[str, Any]:
    """create_collection's arguments besides the vectors: what the operator set, nothing where Qdrant's default is
    wanted (a field left out is Qdrant's to choose, so a single node needs none of them)."""
    chosen: dict[str, Any] = {
        "shard_number": layout.shard_number,
        "replication_factor": layout.replication_factor,
        "write_consistency_factor": layout.write_consistency_factor,
        "on_disk_payload": layout.on_disk_payload,
    }
    if layout.tenant_graphs:
        chosen["hnsw_config"] = models.HnswConfigDiff(payload_m=layout.payload_m, m=0)
    if layout.quantization == "int8":
        chosen["quantization_config"] = models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
        )
    return {key: value for key, value in chosen.items() if value is not None}


def search_params(layout: StoreSettings) -> models.SearchParams | None:
    """Dense searches over int8 vectors fetch `oversampling` times the candidates and rescore them with the original
    vectors, so quantization costs little recall (Qdrant's advice); None where nothing is quantized."""
    if layout.quantization == "none":
        return None
    return models.SearchParams(
        quantization=models.QuantizationSearchParams(rescore=True, oversampling=layout.oversampling)
    )


def connect(layout: StoreSettings) -> AsyncQdrantClient:
    """A client of the configured server, over REST or gRPC, each request with a timeout and retried."""
    api_key = layout.api_key.get_secret_value() if layout.api_key else None
    client = AsyncQdrantClient(
        url=layout.url,
        api_key=api_key,
        prefer_grpc=layout.prefer_grpc,
        grpc_port=layout.grpc_port,
        timeout=max(1, round(layout.timeout_s)),  # qdrant-client takes whole seconds
        check_compatibility=False,  # it would call the server before we asked anything
    )
    return cast(AsyncQdrantClient, Retrying(client, layout.retries))


def transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed if sent again: a timeout, a lost connection, 429 or 5xx; over gRPC,
    UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED. A refusal (400, 404, 409...) is not."""
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in RETRYABLE_STATUS
    if isinstance(exc, ResponseHandlingException | TimeoutError | ConnectionError):
        return True
    try:
        import grpc  # type: ignore[import-untyped]  # qdrant-client's own dependency, unannotated
    except ImportError:
        return False
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        }
    return False


class Retrying:
    """An AsyncQdrantClient whose requests are retried with exponential back-off and jitter on transient errors.

    Every request Confide sends is safe to repeat: upserts and deletes name their points, reads change nothing, and
    creating a collection or index that a lost answer already created is refused with 409, not done twice."""

    def __init__(self, client: AsyncQdrantClient, retries: int) -> None:
        self._client = client
        self._retries = retries

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(found):
            return found

        async def retried(*args: Any, **kwargs: Any) -> Any:
            return await self._call(name, lambda: found(*args, **kwargs))

        return retried

    async def _call(self, name: str, request: Callable[[], Awaitable[Any]]) -> Any:
        for attempt in range(self._retries + 1):
            try:
                return await request()
            except Exception as exc:
                if attempt >= self._retries or not transient(exc):
                    raise
                delay = min(0.25 * 2**attempt, MAX_BACKOFF_S) * (0.5 + random.random())
                log.warning("Qdrant %s failed (%s: %s); retry %d of %d in %.2f s",
                            name, type(exc).__name__, exc, attempt + 1, self._retries, delay)  # fmt: skip
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")
