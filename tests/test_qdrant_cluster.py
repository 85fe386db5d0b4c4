"""A Qdrant cluster as the history store: the layout a new collection is created with, the search parameters it
implies, and retries with back-off, seen on the wire by a loopback server speaking Qdrant's REST API (no Qdrant
server binary installs here). What the layout does to search results is the store contract's, run with it on
qdrant-client's local mode (tests/test_store_contract.py, "cluster")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from bridge.config import StoreSettings
from bridge.history.store import SparseVector
from bridge.history.store.server import ServerStore
from tests.fakes.loopback import serve_on_loopback

CLUSTER = {"shard_number": 6, "replication_factor": 2, "write_consistency_factor": 2, "on_disk_vectors": True,
           "quantization": "int8", "oversampling": 3.0, "tenant_graphs": True, "payload_m": 24}  # fmt: skip


def ok(result: Any) -> web.Response:
    return web.json_response({"result": result, "status": "ok", "time": 0.001})


@dataclass
class FakeQdrant:
    """Qdrant's REST API for what opening a new collection and searching it send; every request is recorded.
    Collection descriptions come from a qdrant-client local mode holding the same collection, so they are whole."""

    failures: list[int] = field(default_factory=list)  # statuses for the next requests, then 200
    delay_s: float = 0.0
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    local: AsyncQdrantClient = field(default_factory=lambda: AsyncQdrantClient(location=":memory:"))
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeQdrant:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/collections", self._collections)
        app.router.add_get("/collections/{name}/exists", self._exists)
        app.router.add_put("/collections/{name}", self._create)
        app.router.add_get("/collections/{name}", self._describe)
        app.router.add_patch("/collections/{name}", lambda _: ok(True))
        app.router.add_put("/collections/{name}/index", lambda _: ok({"operation_id": 1, "status": "completed"}))
        app.router.add_post("/collections/{name}/points/query", lambda _: ok({"points": []}))
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def stop(self) -> None:
        await self.local.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, body))
        await asyncio.sleep(self.delay_s)
        if self.failures:
            status = self.failures.pop(0)
            return web.json_response({"status": {"error": "scripted failure"}, "time": 0}, status=status)
        return await handler(request)

    def sent(self, method: str, path: str) -> list[Any]:
        return [body for m, p, body in self.requests if (m, p) == (method, path)]

    async def _collections(self, request: web.Request) -> web.Response:
        found = await self.local.get_collections()
        return ok({"collections": [{"name": c.name} for c in found.collections]})

    async def _exists(self, request: web.Request) -> web.Response:
        return ok({"exists": await self.local.collection_exists(request.match_info["name"])})

    async def _create(self, request: web.Request) -> web.Response:
        create = models.CreateCollection.model_validate(await request.json())
        await self.local.create_collection(
            request.match_info["name"], vectors_config=create.vectors, sparse_vectors_config=create.sparse_vectors
        )
        return ok(True)

    async def _describe(self, request: web.Request) -> web.Response:
        info = await self.local.get_collection(request.match_info["name"])
        return ok(info.model_dump(mode="json", exclude_none=True))


@pytest.fixture
async def qdrant() -> AsyncIterator[FakeQdrant]:
    server = await FakeQdrant().start()
    yield server
    await server.stop()


def store_for(server: FakeQdrant, **fields: Any) -> ServerStore:
    settings = StoreSettings.model_validate({"backend": "server", "url": server.url, "collection": "history",
                                             "timeout_s": 1, **fields})  # fmt: skip
    return ServerStore.connect(settings)


async def test_a_new_collection_is_created_with_the_cluster_layout_and_searched_with_rescoring(
    qdrant: FakeQdrant,
) -> None:
    store = store_for(qdrant, **CLUSTER)
    await store.open(dimension=8)
    await store.search("ana", [0.1] * 8, SparseVector([1], [1.0]), limit=5, candidates=20)
    await store.close()
    [created] = qdrant.sent("PUT", "/collections/history")
    assert (created["shard_number"], created["replication_factor"], created["write_consistency_factor"]) == (6, 2, 2)
    assert created["on_disk_payload"] is True
    assert all(vector["on_disk"] is True for vector in created["vectors"].values())
    assert created["hnsw_config"] == {"m": 0, "payload_m": 24}, "no per-person graphs (Qdrant's multitenancy advice)"
    assert created["quantization_config"] == {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}
    indexes = {body["field_name"]: body["field_schema"] for body in qdrant.sent("PUT", "/collections/history/index")}
    assert indexes["person"] == {"type": "keyword", "is_tenant": True}
    [query] = qdrant.sent("POST", "/collections/history/points/query")
    dense = [p for p in query["prefetch"] if isinstance(p["query"], list)]
    assert dense and all(p["params"] == {"quantization": {"rescore": True, "oversampling": 3.0}} for p in dense)


async def test_a_single_node_gets_qdrants_own_defaults(qdrant: FakeQdrant) -> None:
    store = store_for(qdrant)
    await store.open(dimension=8)
    await store.search("ana", [0.1] * 8, SparseVector([1], [1.0]), limit=5, candidates=20)
    await store.close()
    [created] = qdrant.sent("PUT", "/collections/history")
    assert set(created) == {"vectors", "sparse_vectors", "metadata", "on_disk_payload"}
    assert all("on_disk" not in vector for vector in created["vectors"].values())
    [query] = qdrant.sent("POST", "/collections/history/points/query")
    assert all("params" not in p for p in query["prefetch"])


async def test_requests_are_retried_with_back_off_while_the_cluster_answers_503(qdrant: FakeQdrant) -> None:
    qdrant.failures = [503, 503]
    store = store_for(qdrant, retries=3)
    started = asyncio.get_running_loop().time()
    await store.open(dimension=8)
    elapsed = asyncio.get_running_loop().time() - started
    await store.close()
    assert [path for _, path, _ in qdrant.requests[:3]] == ["/collections/history/exists"] * 3
    assert qdrant.sent("PUT", "/collections/history"), "the collection was not created after the retries"
    assert elapsed >= 0.25, "the retries did not back off"


async def test_a_refusal_is_not_retried_and_retries_run_out(qdrant: FakeQdrant) -> None:
    qdrant.failures = [400]
    store = store_for(qdrant, retries=3)
    with pytest.raises(UnexpectedResponse):
        await store.open(dimension=8)
    assert len(qdrant.requests) == 1
    qdrant.failures = [503] * 3
    with pytest.raises(UnexpectedResponse):
        await store_for(qdrant, retries=2).open(dimension=8)
    assert len(qdrant.requests) == 1 + 3
    await store.close()


async def test_a_request_that_hangs_times_out_and_is_retried(qdrant: FakeQdrant) -> None:
    qdrant.delay_s = 2.5
    store = store_for(qdrant, timeout_s=1, retries=1)
    with pytest.raises(ResponseHandlingException):
        await store.open(dimension=8)
    await store.close()
    assert len(qdrant.requests) == 2
