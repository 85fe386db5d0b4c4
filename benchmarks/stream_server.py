"""An instant OpenAI-compatible stream server on loopback: the model side of the pipeline benchmark.

It answers every chat completion at once, as SSE chunks with a usage chunk and `data: [DONE]`, so what the
benchmark measures is Confide's own work, not a model's. Counts requests in flight to show that the pipeline
keeps every configured slot busy.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aiohttp import web

MODEL = "instant"


class StreamServer:
    def __init__(self, words_per_chunk: int = 4) -> None:
        self.words_per_chunk = words_per_chunk
        self.in_flight = 0
        self.peak_in_flight = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> StreamServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            # The question is the paragraph after "question:" in the last message (bridge/answering/prompt.py's layout).
            asked = re.split(r"question:", str(body["messages"][-1]["content"]), flags=re.IGNORECASE)[-1]
            question = asked.strip().split("\n\n", 1)[0].strip()
            words = f"You asked: {question} [1]".split(" ")
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for start in range(0, len(words), self.words_per_chunk):
                text = " ".join(words[start : start + self.words_per_chunk]) + " "
                await response.write(_event(_chunk({"content": text}, None)))
            await response.write(_event(_chunk({}, "stop")))
            usage = {"prompt_tokens": 100, "completion_tokens": len(words), "total_tokens": 100 + len(words)}
            await response.write(_event({**_chunk({}, None), "choices": [], "usage": usage}))
            await response.write(b"data: [DONE]\n\n")
            return response
        finally:
            self.in_flight -= 1


def _chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "bench", "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL,
            "choices": [choice]}  # fmt: skip


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()
