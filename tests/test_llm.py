"""The model client against a local server speaking vLLM's OpenAI wire format: streams, errors, retries."""

from __future__ import annotations

import asyncio

import pytest

from bridge.models.llm import BREAKER_FAILURES, Delta, Done, ModelClient, ModelUnavailable, Restart, StreamEvent
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.helpers import eventually, model_for

MESSAGES = [{"role": "user", "content": "Question: what time is it"}]


async def collect(client: ModelClient, name: str = "m") -> list[StreamEvent]:
    return [event async for event in client.stream(name, MESSAGES)]


def text_of(events: list[StreamEvent]) -> str:
    text = ""
    for event in events:
        if isinstance(event, Restart):
            text = ""
        elif isinstance(event, Delta):
            text += event.text
    return text


async def test_streams_deltas_then_usage(fake_llm: FakeOpenAI) -> None:
    client = ModelClient({"m": model_for(fake_llm)})
    events = await collect(client)
    await client.close()
    assert [type(e) for e in events[:-1]] == [Delta] * (len(events) - 1)
    assert text_of(events).strip() == "You asked: what time is it"
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop"
    assert done.completion_tokens == len(events) - 1 and done.prompt_tokens > 0
    assert done.ttft_s is not None and done.total_s >= done.ttft_s
    request = fake_llm.requests[0]
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}


async def test_429_waits_retry_after_then_succeeds(fake_llm: FakeOpenAI) -> None:
    fake_llm.script = [Behaviour(status=429, retry_after=0.6)]
    client = ModelClient({"m": model_for(fake_llm)})
    started = asyncio.get_running_loop().time()
    events = await collect(client)
    elapsed = asyncio.get_running_loop().time() - started
    await client.close()
    assert len(fake_llm.requests) == 2
    assert elapsed >= 0.6, "the Retry-After of the 429 was not honoured"
    assert "what time is it" in text_of(events)


async def test_a_malformed_stream_event_is_retried_and_the_shown_text_restarts(fake_llm: FakeOpenAI) -> None:
    fake_llm.script = [Behaviour(malformed_after_chunks=1)]
    client = ModelClient({"m": model_for(fake_llm)})
    events = await collect(client)
    await client.close()
    assert len(fake_llm.requests) == 2
    assert any(isinstance(e, Restart) for e in events), "the text shown before the garbage was not taken back"
    assert "what time is it" in text_of(events)


async def test_a_model_that_is_down_is_waited_for_without_being_hammered(fake_llm: FakeOpenAI) -> None:
    """Its circuit opens after a few failures: no request is sent while probes ask whether it is back; the question
    waits (CONFIDE_MODEL_WAIT_S) and gets the real answer, not the fallback."""
    fake_llm.default = Behaviour(status=503)
    client = ModelClient({"m": model_for(fake_llm, retries=1)}, wait_s=30)
    asking = asyncio.create_task(collect(client))
    await eventually(lambda: len(fake_llm.requests) >= BREAKER_FAILURES)
    await asyncio.sleep(2.5)
    while_open = len(fake_llm.requests)
    fake_llm.default = Behaviour()  # the model is back
    events = await asyncio.wait_for(asking, 40)
    probes = client.probes("m")
    await client.close()
    assert while_open == BREAKER_FAILURES, "requests were sent while the circuit was open"
    assert probes >= 1 and "what time is it" in text_of(events)


async def test_a_model_down_longer_than_the_wait_gives_up(fake_llm: FakeOpenAI) -> None:
    fake_llm.default = Behaviour(status=503)
    client = ModelClient({"m": model_for(fake_llm, retries=1)}, wait_s=2)
    started = asyncio.get_running_loop().time()
    with pytest.raises(ModelUnavailable, match=r"HTTP 503|down for over"):
        await collect(client)
    waited = asyncio.get_running_loop().time() - started
    with pytest.raises(ModelUnavailable, match="down for over 2 s"):
        await collect(client)  # the circuit is open: no request at all
    await client.close()
    assert 2 <= waited < 10 and len(fake_llm.requests) == BREAKER_FAILURES


async def test_server_errors_exhaust_retries(fake_llm: FakeOpenAI) -> None:
    fake_llm.default = Behaviour(status=500)
    client = ModelClient({"m": model_for(fake_llm, retries=2)})
    with pytest.raises(ModelUnavailable, match="HTTP 500"):
        await collect(client)
    await client.close()
    assert len(fake_llm.requests) == 3


async def test_bad_request_is_not_retried(fake_llm: FakeOpenAI) -> None:
    fake_llm.script = [Behaviour(status=400)]
    client = ModelClient({"m": model_for(fake_llm, retries=3)})
    with pytest.raises(ModelUnavailable, match="HTTP 400"):
        await collect(client)
    await client.close()
    assert len(fake_llm.requests) == 1


async def test_unknown_model_id_is_reported(fake_llm: FakeOpenAI) -> None:
    client = ModelClient({"m": model_for(fake_llm, model="no-such-model")})
    with pytest.raises(ModelUnavailable, match="does not exist"):
        await collect(client)
    await client.close()


async def test_cut_stream_restarts_and_final_text_is_whole(fake_llm: FakeOpenAI) -> None:
    fake_llm.script = [Behaviour(cut_after_chunks=2)]
    client = ModelClient({"m": model_for(fake_llm)})
    events = await collect(client)
    await client.close()
    assert any(isinstance(e, Restart) for e in events)
    assert text_of(events).strip() == "You asked: what time is it"
    assert len(fake_llm.requests) == 2


async def test_stream_without_finish_is_treated_as_cut(fake_llm: FakeOpenAI) -> None:
    fake_llm.script = [Behaviour(no_finish=True)]
    client = ModelClient({"m": model_for(fake_llm)})
    events = await collect(client)
    await client.close()
    assert isinstance(events[-1], Done)
    assert len(fake_llm.requests) == 2


async def test_slow_server_times_out(fake_llm: FakeOpenAI) -> None:
    fake_llm.default = Behaviour(delay_s=2.0)
    client = ModelClient({"m": model_for(fake_llm, timeout_s=0.3, retries=1)})
    started = asyncio.get_running_loop().time()
    with pytest.raises(ModelUnavailable, match=r"timed out|Timeout"):
        await collect(client)
    await client.close()
    assert asyncio.get_running_loop().time() - started < 3.0


async def test_slow_stream_times_out_as_a_whole(fake_llm: FakeOpenAI) -> None:
    fake_llm.default = Behaviour(chunk_delay_s=0.2)
    client = ModelClient({"m": model_for(fake_llm, timeout_s=0.5, retries=0)})
    with pytest.raises(ModelUnavailable):
        await collect(client)
    await client.close()


async def test_unreachable_endpoint(fake_llm: FakeOpenAI) -> None:
    port = fake_llm.port
    await fake_llm.stop()
    settings = model_for(fake_llm, retries=1, base_url=f"http://127.0.0.1:{port}/v1")
    client = ModelClient({"m": settings})
    with pytest.raises(ModelUnavailable, match="Connection"):
        await collect(client)
    await client.close()


async def test_concurrency_is_per_model_and_reached(fake_llm: FakeOpenAI) -> None:
    fake_llm.default = Behaviour(chunk_delay_s=0.05)
    other = await FakeOpenAI(model="other").start()
    other.default = Behaviour(chunk_delay_s=0.05)
    client = ModelClient({"m": model_for(fake_llm, concurrency=3), "o": model_for(other, concurrency=2)})
    await asyncio.gather(*(collect(client, "m") for _ in range(9)), *(collect(client, "o") for _ in range(6)))
    await client.close()
    await other.stop()
    assert fake_llm.peak_in_flight == 3
    assert other.peak_in_flight == 2


async def test_a_request_goes_to_the_replica_with_the_fewest_outstanding_requests() -> None:
    """While one replica is busy with a slow answer, the next questions go to the idle one (round robin would send
    every second one to the busy replica)."""
    busy, idle = await FakeOpenAI().start(), await FakeOpenAI().start()
    busy.default = Behaviour(delay_s=2.0)
    client = ModelClient({"m": model_for(busy, replicas=[idle.base_url])})
    try:
        slow = asyncio.create_task(collect(client))
        await eventually(lambda: busy.in_flight == 1)
        for _ in range(4):
            assert "what time is it" in text_of(await collect(client))
        assert "what time is it" in text_of(await slow)
    finally:
        await client.close()
        await busy.stop()
        await idle.stop()
    assert (len(busy.requests), len(idle.requests)) == (1, 4)


async def test_concurrent_requests_are_spread_over_replicas_each_within_its_own_limit() -> None:
    first, second = await FakeOpenAI().start(), await FakeOpenAI().start()
    for server in (first, second):
        server.default = Behaviour(delay_s=0.5)
    client = ModelClient({"m": model_for(first, replicas=[second.base_url], concurrency=2)})
    try:
        answers = await asyncio.gather(*(collect(client) for _ in range(6)))
    finally:
        await client.close()
        await first.stop()
        await second.stop()
    assert all("what time is it" in text_of(events) for events in answers)
    assert (len(first.requests), len(second.requests)) == (3, 3)
    assert (first.peak_in_flight, second.peak_in_flight) == (2, 2), "a replica got more than its concurrency"
    assert client.peak_in_flight("m") == 4


async def test_a_failing_replica_gets_no_more_requests_while_the_others_answer() -> None:
    """Its circuit opens after a few failures and the questions meanwhile are answered by the other replica, at
    once (no back-off towards a replica that is up); a probe lets it back in when it answers again."""
    failing, healthy = await FakeOpenAI().start(), await FakeOpenAI().start()
    failing.default = Behaviour(status=503)
    client = ModelClient({"m": model_for(failing, replicas=[healthy.base_url], retries=0)})
    try:
        started = asyncio.get_running_loop().time()
        for _ in range(12):
            assert "what time is it" in text_of(await collect(client))
        elapsed = asyncio.get_running_loop().time() - started
        assert len(failing.requests) == BREAKER_FAILURES, "requests went on to a replica whose circuit is open"
        assert client.replicas_up("m") == [healthy.base_url] and client.is_up("m")
        assert elapsed < 5, f"questions waited {elapsed:.1f} s although a replica was up"
        failing.default = Behaviour()  # back
        await eventually(lambda: client.replicas_up("m") == [failing.base_url, healthy.base_url], within_s=15)
        before = len(failing.requests)
        await asyncio.gather(*(collect(client) for _ in range(4)))
        assert len(failing.requests) > before, "the replica that came back got no request"
    finally:
        await client.close()
        await failing.stop()
        await healthy.stop()


async def test_the_model_is_down_only_when_every_replica_is() -> None:
    first, second = await FakeOpenAI().start(), await FakeOpenAI().start()
    for server in (first, second):
        server.default = Behaviour(status=503)
    client = ModelClient({"m": model_for(first, replicas=[second.base_url], retries=0)})
    try:
        for _ in range(2 * BREAKER_FAILURES):
            with pytest.raises(ModelUnavailable):
                await collect(client)
            if client.replicas_up("m"):
                assert client.is_up("m")
        assert not client.is_up("m") and client.replicas_up("m") == []
        sent = len(first.requests) + len(second.requests)
        with pytest.raises(ModelUnavailable, match="down for over"):
            await collect(client)
        assert len(first.requests) + len(second.requests) == sent
    finally:
        await client.close()
        await first.stop()
        await second.stop()


async def test_a_request_tries_every_replica_before_it_gives_up() -> None:
    """Two of three replicas fail it in turn: the third, never tried yet, answers (not the first one again)."""
    servers = [await FakeOpenAI().start() for _ in range(3)]
    servers[0].script, servers[1].script = [Behaviour(status=503)], [Behaviour(status=503)]
    client = ModelClient({"m": model_for(servers[0], replicas=[s.base_url for s in servers[1:]], retries=0)})
    try:
        assert "what time is it" in text_of(await collect(client))
    finally:
        await client.close()
        for server in servers:
            await server.stop()
    assert [len(server.requests) for server in servers] == [1, 1, 1]
