"""Chat models behind OpenAI-compatible endpoints (vLLM in production), streamed.

Each named model has its own concurrency limit, so two models never wait on each other and nothing
is serialized globally. Failures before the answer is complete are retried (honouring Retry-After);
when retries run out the caller gets `ModelUnavailable` and falls back to showing the history.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import httpx
import openai
from openai import AsyncOpenAI, AsyncStream, RequestOptions
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from bridge.config import ModelSettings
from bridge.dispatch.at_work import now_at_work

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Restart:
    """The stream broke after some text and is being retried: drop what was shown so far."""

    reason: str


@dataclass(frozen=True)
class Done:
    model: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    total_s: float
    finish_reason: str


StreamEvent = Delta | Restart | Done


class ModelUnavailable(Exception):
    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model!r} unavailable: {reason}")
        self.model = model
        self.reason = reason


class StreamCut(Exception):
    """The server ended the stream before saying it was finished."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    # openai 3.x reads streams through httpx2, older releases through httpx: a dropped stream raises either.
    errors: list[type[BaseException]] = [httpx.HTTPError]
    try:
        import httpx2

        errors.append(httpx2.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


_RETRYABLE: tuple[type[BaseException], ...] = (
    openai.APIConnectionError,
    openai.APITimeoutError,
    openai.RateLimitError,
    openai.InternalServerError,
    StreamCut,
    TimeoutError,
    json.JSONDecodeError,  # a malformed stream event (a proxy's or a server bug's): the next attempt may be whole
    *_transport_errors(),
)


_PROBE_ERRORS: tuple[type[BaseException], ...] = (openai.APIError, TimeoutError, *_transport_errors())
BREAKER_FAILURES = 3  # consecutive failed requests that open a model's circuit
PROBE_MAX_S = 30.0  # the longest pause between two health probes of a model that is down


@dataclass
class _Model:
    settings: ModelSettings
    client: AsyncOpenAI
    limit: asyncio.Semaphore
    in_flight: int = 0
    peak_in_flight: int = 0
    # The circuit breaker: after BREAKER_FAILURES failures in a row no request is sent; a probe asks the server
    # (GET /models, cheap) with back-off, and the first success lets the waiting questions through again.
    failures: int = 0
    trial: bool = False  # half-open: a probe succeeded; one more failure opens the circuit again at once
    up: asyncio.Event = field(default_factory=asyncio.Event)
    probe: asyncio.Task[None] | None = None
    probes: int = 0

    def __post_init__(self) -> None:
        self.up.set()


class ModelClient:
    """`wait_s`: how long a question waits for a model that is down (its circuit open) before ModelUnavailable;
    0: only the model's own `retries`."""

    def __init__(self, models: dict[str, ModelSettings], proxy: str | None = None, wait_s: float = 0.0) -> None:
        self._models = {name: _build(settings, proxy) for name, settings in models.items()}
        self.wait_s = wait_s

    def names(self) -> list[str]:
        return list(self._models)

    def settings(self, name: str) -> ModelSettings:
        return self._model(name).settings

    def peak_in_flight(self, name: str) -> int:
        return self._model(name).peak_in_flight

    def is_up(self, name: str) -> bool:
        """Whether requests go to this model (its circuit is closed); an unknown model is not."""
        model = self._models.get(name)
        return model is not None and model.up.is_set()

    def probes(self, name: str) -> int:
        return self._model(name).probes

    async def stream(self, name: str, messages: list[dict[str, str]]) -> AsyncIterator[StreamEvent]:
        model = self._model(name)
        retries = model.settings.retries
        deadline = time.monotonic() + self.wait_s
        reason = "its circuit is open"
        for attempt in itertools.count():
            if not await self._wait_until_up(model, deadline):
                raise ModelUnavailable(name, f"down for over {self.wait_s:.0f} s ({reason})")
            shown = False
            try:
                async with model.limit:
                    await now_at_work()  # the wait for a slot is over: from here a crash counts against the message
                    model.in_flight += 1
                    model.peak_in_flight = max(model.peak_in_flight, model.in_flight)
                    try:
                        async with asyncio.timeout(model.settings.timeout_s):
                            async for event in self._attempt(name, model, messages):
                                shown = shown or isinstance(event, Delta)
                                yield event
                        model.failures, model.trial = 0, False
                        return
                    finally:
                        model.in_flight -= 1
            except _RETRYABLE as exc:
                reason = _describe(exc)
                self._failed(name, model, reason)
                if attempt >= retries and time.monotonic() >= deadline:
                    raise ModelUnavailable(name, reason) from exc
                delay = _retry_delay(exc, min(attempt, 4))
                log.warning("model %s failed (%s); retry %d in %.1fs", name, reason, attempt + 1, delay)
                if shown:
                    yield Restart(reason)
                await asyncio.sleep(delay)
            except openai.APIStatusError as exc:  # 4xx other than 429: retrying will not help
                raise ModelUnavailable(name, _describe(exc)) from exc

    def _failed(self, name: str, model: _Model, reason: str) -> None:
        model.failures += 1
        if (model.trial or model.failures >= BREAKER_FAILURES) and model.up.is_set():
            log.error("model %s failed %d times in a row (%s): no more requests until it answers a probe",
                      name, model.failures, reason)  # fmt: skip
            model.up.clear()
            model.probe = asyncio.create_task(self._probe(name, model), name=f"confide-probe-{name}")

    async def _wait_until_up(self, model: _Model, deadline: float) -> bool:
        """Whether the model's circuit is closed, waiting for it until `deadline`."""
        if model.up.is_set():
            return True
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await model.up.wait()
        except TimeoutError:
            return False
        return True

    async def _probe(self, name: str, model: _Model) -> None:
        """Ask a model that is down whether it is back, with back-off; close its circuit when it is."""
        delay = 1.0
        while True:
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            model.probes += 1
            try:
                await model.client.models.list(timeout=model.settings.connect_timeout_s + 5)
            except _PROBE_ERRORS as exc:
                log.info("model %s still down (%s); next probe in %.0f s", name, _describe(exc), delay)
                delay = min(delay * 2, PROBE_MAX_S)
                continue
            log.info("model %s answers again: requests resume", name)
            model.failures, model.trial = 0, True
            model.up.set()
            return

    async def _attempt(self, name: str, model: _Model, messages: list[dict[str, str]]) -> AsyncIterator[StreamEvent]:
        started = time.monotonic()
        first: float | None = None
        pieces = 0
        usage = None
        finish = None
        stream = await _create_stream(model, messages)
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        if first is None:
                            first = time.monotonic() - started
                        pieces += 1
                        yield Delta(choice.delta.content)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        if finish is None:
            raise StreamCut("stream ended without a finish reason")
        yield Done(
            model=name,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else pieces,
            ttft_s=first,
            total_s=time.monotonic() - started,
            finish_reason=finish,
        )

    async def list_remote_models(self, name: str) -> list[str]:
        """What the endpoint serves (for `confide doctor`)."""
        page = await self._model(name).client.models.list()
        return [m.id for m in page.data]

    async def close(self) -> None:
        for model in self._models.values():
            if model.probe is not None:
                model.probe.cancel()
                await asyncio.gather(model.probe, return_exceptions=True)
            await model.client.close()

    def _model(self, name: str) -> _Model:
        try:
            return self._models[name]
        except KeyError:
            raise ModelUnavailable(name, f"no model named {name!r} is configured") from None


def openai_http_client(proxy: str | None) -> openai.DefaultAsyncHttpxClient:
    """The HTTP client of every OpenAI-compatible endpoint: proxy variables of the environment (HTTPS_PROXY, ...)
    are never read, so a request carrying a person's history cannot go to a host nobody configured; a proxy is
    used only when configured (CONFIDE_PROXY_URL), and then it is an endpoint like any other."""
    if proxy:
        return openai.DefaultAsyncHttpxClient(trust_env=False, proxy=proxy)
    return openai.DefaultAsyncHttpxClient(trust_env=False)


def _build(settings: ModelSettings, proxy: str | None) -> _Model:
    timeout = openai.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
    client = AsyncOpenAI(
        base_url=settings.base_url,
        api_key=settings.api_key.get_secret_value(),
        timeout=timeout,
        max_retries=0,  # retries are ours: they must know whether text was already shown
        http_client=openai_http_client(proxy),
    )
    return _Model(settings, client, asyncio.Semaphore(settings.concurrency))


def _retry_delay(exc: BaseException, attempt: int) -> float:
    response = getattr(exc, "response", None)
    if response is not None:
        header = response.headers.get("retry-after")
        if header:
            try:
                return min(float(header), 60.0)
            except ValueError:
                pass
    return min(0.5 * 2**attempt, 8.0) * (0.8 + 0.4 * random.random())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# The request is plain JSON already (strings in dicts), so it is posted as it is: the typed
# `chat.completions.create` walks every message through a union of TypedDicts first, which measured a fifth of the
# event loop's time under load (benchmarks/pipeline.py) for no change to the body. Auth, retries, errors and the
# stream's parsing stay the client's own (`post` is the openai client's documented way to make a request).
_AUTH: dict[str, object] = {"security": {"bearer_auth": True}} if "security" in RequestOptions.__annotations__ else {}


async def _create_stream(model: _Model, messages: list[dict[str, str]]) -> AsyncStream[ChatCompletionChunk]:
    body = {
        "model": model.settings.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": model.settings.max_tokens,
        "temperature": model.settings.temperature,
    }
    return await model.client.post(
        "/chat/completions",
        cast_to=ChatCompletion,
        body=body,
        options=cast("RequestOptions", _AUTH),
        stream=True,
        stream_cls=AsyncStream[ChatCompletionChunk],
    )
