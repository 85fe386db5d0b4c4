"""Chat models behind OpenAI-compatible endpoints (vLLM in production), streamed.

Each named model has its own concurrency limit per replica, so two models never wait on each other and nothing
is serialized globally. A model served by several replicas (vLLM behind several base URLs) sends each request to
the replica with the fewest outstanding requests; each replica has its own circuit breaker, so a failing one gets
no requests while the others answer. Failures before the answer is complete are retried (honouring Retry-After);
when retries run out the caller gets `ModelUnavailable` and falls back to showing the history.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
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
class _Replica:
    """One server of a model (a vLLM replica), with its own slots and its own circuit breaker."""

    url: str
    client: AsyncOpenAI
    limit: asyncio.Semaphore
    outstanding: int = 0  # requests routed here, waiting for a slot or in flight: what routing balances
    in_flight: int = 0
    # The circuit breaker: after BREAKER_FAILURES failures in a row no request is sent; a probe asks the server
    # (GET /models, cheap) with back-off, and the first success lets requests through again.
    failures: int = 0
    trial: bool = False  # half-open: a probe succeeded; one more failure opens the circuit again at once
    up: asyncio.Event = field(default_factory=asyncio.Event)
    probe: asyncio.Task[None] | None = None
    probes: int = 0

    def __post_init__(self) -> None:
        self.up.set()


@dataclass
class _Model:
    settings: ModelSettings
    replicas: list[_Replica]
    in_flight: int = 0
    peak_in_flight: int = 0
    # Set while any replica's circuit is closed: a question waits on it when every replica is down.
    any_up: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.any_up.set()

    def pick(self, tried: Sequence[_Replica] = ()) -> _Replica | None:
        """The replica with the fewest outstanding requests among those up, those this request already tried last
        (the one that failed it most recently last of all); None when all are down."""
        up = [replica for replica in self.replicas if replica.up.is_set()]
        if not up:
            return None
        untried = [replica for replica in up if replica not in tried]
        if untried:
            return min(untried, key=lambda replica: replica.outstanding)
        return min(up, key=lambda replica: (tried[::-1].index(replica) == 0, replica.outstanding))


class ModelClient:
    """`wait_s`: how long a question waits for a model that is down (the circuits of all its replicas open)
    before ModelUnavailable; 0: only the model's own `retries`."""

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
        """Whether requests go to this model (a replica's circuit is closed); an unknown model is not."""
        model = self._models.get(name)
        return model is not None and model.any_up.is_set()

    def replicas_up(self, name: str) -> list[str]:
        """The base URLs of the replicas whose circuit is closed."""
        return [replica.url for replica in self._model(name).replicas if replica.up.is_set()]

    def probes(self, name: str) -> int:
        return sum(replica.probes for replica in self._model(name).replicas)

    async def stream(self, name: str, messages: list[dict[str, str]]) -> AsyncIterator[StreamEvent]:
        model = self._model(name)
        # Each replica gets a chance before a question gives up, whatever `retries` says.
        retries = max(model.settings.retries, len(model.replicas) - 1)
        deadline = time.monotonic() + self.wait_s
        reason = "its circuit is open"
        tried: list[_Replica] = []  # replicas that failed this request, in order
        for attempt in itertools.count():
            replica = await self._replica(model, tried, deadline)
            if replica is None:
                raise ModelUnavailable(name, f"down for over {self.wait_s:.0f} s ({reason})")
            shown = False
            replica.outstanding += 1
            try:
                async with replica.limit:
                    await now_at_work()  # the wait for a slot is over: from here a crash counts against the message
                    model.in_flight += 1
                    replica.in_flight += 1
                    model.peak_in_flight = max(model.peak_in_flight, model.in_flight)
                    try:
                        async with asyncio.timeout(model.settings.timeout_s):
                            async for event in self._attempt(name, model, replica, messages):
                                shown = shown or isinstance(event, Delta)
                                yield event
                        replica.failures, replica.trial = 0, False
                        return
                    finally:
                        model.in_flight -= 1
                        replica.in_flight -= 1
            except _RETRYABLE as exc:
                reason = _describe(exc)
                self._failed(name, model, replica, reason)
                tried = [*(r for r in tried if r is not replica), replica]
                if attempt >= retries and time.monotonic() >= deadline:
                    raise ModelUnavailable(name, reason) from exc
                # Another replica that is up takes the retry at once; the same server is given time to recover.
                elsewhere = model.pick(tried) not in (None, replica)
                delay = _retry_delay(exc, min(attempt, 4), backing_off=not elsewhere)
                log.warning("model %s failed at %s (%s); retry %d in %.1fs", name, replica.url, reason, attempt + 1,
                            delay)  # fmt: skip
                if shown:
                    yield Restart(reason)
                await asyncio.sleep(delay)
            except openai.APIStatusError as exc:  # 4xx other than 429: retrying will not help
                raise ModelUnavailable(name, _describe(exc)) from exc
            finally:
                replica.outstanding -= 1

    async def _replica(self, model: _Model, tried: Sequence[_Replica], deadline: float) -> _Replica | None:
        """The replica for the next attempt, waiting until `deadline` while every replica is down."""
        while (replica := model.pick(tried)) is None:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await model.any_up.wait()
            except TimeoutError:
                return None
        return replica

    def _failed(self, name: str, model: _Model, replica: _Replica, reason: str) -> None:
        replica.failures += 1
        if (replica.trial or replica.failures >= BREAKER_FAILURES) and replica.up.is_set():
            log.error("model %s failed %d times in a row at %s (%s): no more requests there until it answers a probe",
                      name, replica.failures, replica.url, reason)  # fmt: skip
            replica.up.clear()
            if not any(other.up.is_set() for other in model.replicas):
                model.any_up.clear()
            replica.probe = asyncio.create_task(self._probe(name, model, replica), name=f"confide-probe-{name}")

    async def _probe(self, name: str, model: _Model, replica: _Replica) -> None:
        """Ask a replica that is down whether it is back, with back-off; close its circuit when it is."""
        delay = 1.0
        while True:
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            replica.probes += 1
            try:
                await replica.client.models.list(timeout=model.settings.connect_timeout_s + 5)
            except _PROBE_ERRORS as exc:
                log.info("model %s still down at %s (%s); next probe in %.0f s", name, replica.url, _describe(exc),
                         delay)  # fmt: skip
                delay = min(delay * 2, PROBE_MAX_S)
                continue
            log.info("model %s answers again at %s: requests resume", name, replica.url)
            replica.failures, replica.trial = 0, True
            replica.up.set()
            model.any_up.set()
            return

    async def _attempt(
        self, name: str, model: _Model, replica: _Replica, messages: list[dict[str, str]]
    ) -> AsyncIterator[StreamEvent]:
        started = time.monotonic()
        first: float | None = None
        pieces = 0
        usage = None
        finish = None
        stream = await _create_stream(model.settings, replica.client, messages)
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

    async def list_remote_models(self, name: str) -> dict[str, list[str]]:
        """What each replica serves, by its base URL (for `confide doctor`)."""
        served: dict[str, list[str]] = {}
        for replica in self._model(name).replicas:
            page = await replica.client.models.list()
            served[replica.url] = [m.id for m in page.data]
        return served

    async def close(self) -> None:
        for model in self._models.values():
            for replica in model.replicas:
                if replica.probe is not None:
                    replica.probe.cancel()
                    await asyncio.gather(replica.probe, return_exceptions=True)
                await replica.client.close()

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
    replicas = [
        _Replica(
            url,
            AsyncOpenAI(
                base_url=url,
                api_key=settings.api_key.get_secret_value(),
                timeout=timeout,
                max_retries=0,  # retries are ours: they must know whether text was already shown
                http_client=openai_http_client(proxy),
            ),
            asyncio.Semaphore(settings.concurrency),
        )
        for url in settings.base_urls
    ]
    return _Model(settings, replicas)


def _retry_delay(exc: BaseException, attempt: int, backing_off: bool = True) -> float:
    """The pause before a retry: the server's Retry-After, else exponential back-off with jitter; a retry that goes to
    another replica waits only a moment (`backing_off` False)."""
    if not backing_off:
        return 0.05 * (0.8 + 0.4 * random.random())
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


async def _create_stream(
    settings: ModelSettings, client: AsyncOpenAI, messages: list[dict[str, str]]
) -> AsyncStream[ChatCompletionChunk]:
    body = {
        "model": settings.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": settings.max_tokens,
        "temperature": settings.temperature,
    }
    return await client.post(
        "/chat/completions",
        cast_to=ChatCompletion,
        body=body,
        options=cast("RequestOptions", _AUTH),
        stream=True,
        stream_cls=AsyncStream[ChatCompletionChunk],
    )
