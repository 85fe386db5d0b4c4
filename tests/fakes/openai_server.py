"""A local HTTP server that speaks vLLM's OpenAI-compatible wire format, for tests and benchmarks.

Real HTTP on loopback: SSE chunks, a usage chunk, `data: [DONE]`, OpenAI-style error bodies, 429 with
Retry-After. Each request takes the next scripted behaviour (or the default) so a test can stage
failures: an error status, a slow start, a stream cut in the middle, a stream that never finishes.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.loopback import serve_on_loopback


@dataclass
class Behaviour:
    status: int = 200
    retry_after: float | None = None
    delay_s: float = 0.0  # before the response starts
    chunk_delay_s: float = 0.0
    cut_after_chunks: int | None = None  # drop the connection after this many content chunks
    no_finish: bool = False  # end the stream cleanly but without finish_reason and [DONE]
    malformed_after_chunks: int | None = None  # then one event whose data is not JSON (a proxy's or a bug's garbage)
    text: str | None = None  # None: use the server's answer function


def default_answer(messages: list[dict[str, Any]]) -> str:
    """Echo the question of the last message (the paragraph after "question:"), then quote the first excerpt's first
    line and cite it: a model that says what its excerpt says, so Confide's support check keeps the citation."""
    asked = re.split(r"question:", str(messages[-1]["content"]), flags=re.IGNORECASE)[-1]
    question = asked.strip().split("\n\n", 1)[0].strip()
    quoted = re.search(r"<history>\n\[1\][^\n]*\n> ([^\n]*)", "\n".join(str(m["content"]) for m in messages))
    return f"You asked: {question} {quoted[1]} [1]" if quoted else f"You asked: {question}"


@dataclass
class FakeOpenAI:
    model: str = "test-model"
    answer: Callable[[list[dict[str, Any]]], str] = default_answer
    words_per_chunk: int = 1
    default: Behaviour = field(default_factory=Behaviour)
    script: list[Behaviour] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    transcriptions: list[dict[str, Any]] = field(default_factory=list)  # /v1/audio/transcriptions calls
    embedding_requests: list[dict[str, Any]] = field(default_factory=list)  # /v1/embeddings bodies
    embedding_script: list[Behaviour] = field(default_factory=list)  # then 200 after embedding_delay_s
    embedding_delay_s: float = 0.0
    embedding_in_flight: int = 0
    embedding_peak_in_flight: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        self._runner, self.port = await serve_on_loopback(app, self.port)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        if self.default.status != 200:  # a server that is down (the default) answers no endpoint
            return _error(self.default.status, "scripted failure", "ServerError", self.default.retry_after)
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _transcriptions(self, request: web.Request) -> web.Response:
        """Whisper's endpoint as vLLM serves it: multipart form (file, model, language, ...), JSON {"text"}.
        The "speech" of a test audio file is its bytes after b"SPEECH:" (an Ogg file's last packet)."""
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return _error(400, "file is required", "BadRequestError")
        data = upload.file.read()
        self.transcriptions.append({"model": form.get("model"), "name": upload.filename, "size": len(data),
                                    "language": form.get("language")})  # fmt: skip
        if form.get("model") != self.model:
            return _error(404, f"The model `{form.get('model')}` does not exist.", "NotFoundError")
        said = data.partition(b"SPEECH:")[2].decode() if b"SPEECH:" in data else ""
        return web.json_response({"text": said})

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.embedding_requests.append(body)
        behaviour = self.embedding_script.pop(0) if self.embedding_script else Behaviour(delay_s=self.embedding_delay_s)
        self.embedding_in_flight += 1
        self.embedding_peak_in_flight = max(self.embedding_peak_in_flight, self.embedding_in_flight)
        try:
            await asyncio.sleep(behaviour.delay_s)
        finally:
            self.embedding_in_flight -= 1
        if behaviour.status != 200:
            return _error(behaviour.status, "scripted failure", "ServerError", behaviour.retry_after)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": _toy_embedding(str(text))} for i, text in enumerate(inputs)
        ]
        return web.json_response({"object": "list", "data": data, "model": body["model"], "usage": {}})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.started.set()
        behaviour = self.script.pop(0) if self.script else self.default
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if behaviour.delay_s:
                await asyncio.sleep(behaviour.delay_s)
            if body.get("model") != self.model:
                return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
            if behaviour.status != 200:
                return _error(behaviour.status, "scripted failure", "ServerError", behaviour.retry_after)
            text = behaviour.text if behaviour.text is not None else self.answer(body["messages"])
            if not body.get("stream"):
                return web.json_response(_completion(self.model, text))
            return await self._stream(request, body, behaviour, text)
        finally:
            self.in_flight -= 1

    async def _stream(
        self, request: web.Request, body: dict[str, Any], behaviour: Behaviour, text: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        async def send(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> None:
            chunk: dict[str, Any] = {
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": self.model,
                "choices": choices,
            }  # fmt: skip
            if usage is not None:
                chunk["usage"] = usage
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
        )
        words = text.split(" ")
        pieces = [
            " ".join(words[i : i + self.words_per_chunk]) + " " for i in range(0, len(words), self.words_per_chunk)
        ]
        for number, piece in enumerate(pieces):
            if behaviour.cut_after_chunks is not None and number >= behaviour.cut_after_chunks:
                assert request.transport is not None
                request.transport.abort()  # the connection drops mid-stream, as when a server dies
                return response
            if behaviour.malformed_after_chunks is not None and number == behaviour.malformed_after_chunks:
                await response.write(b'data: {"id": "chatcmpl-x", "choices": [{"delta": {"content": "tru\n\n')
            if behaviour.chunk_delay_s:
                await asyncio.sleep(behaviour.chunk_delay_s)
            await send([{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}])
        if behaviour.no_finish:
            await response.write_eof()
            return response
        await send([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt_tokens = sum(len(str(m["content"]).split()) for m in body["messages"])
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                     "total_tokens": prompt_tokens + len(pieces)}  # fmt: skip
            await send([], usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _error(status: int, message: str, kind: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return web.json_response({"error": body}, status=status, headers=headers)


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": len(text.split()), "total_tokens": 1 + len(text.split())},
    }


def _toy_embedding(text: str, size: int = 16) -> list[float]:
    vector = [0.0] * size
    for word in text.lower().split():
        vector[zlib.crc32(word.encode()) % size] += 1.0
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [v / norm for v in vector]


def retrieved_history(request: dict[str, Any]) -> str:
    """The <history> block of a request's prompt (wherever bridge/answering/prompt.py put it): what retrieval gave the
    model, apart from the chat's own turns. Fails loudly if there is none, so no check passes for lack of it."""
    text = "\n".join(str(m["content"]) for m in request["messages"])
    found = re.search(r"<history>\n(.*?)\n</history>", text, re.DOTALL)
    assert found is not None, "the prompt holds no <history> block"
    return found.group(1)
