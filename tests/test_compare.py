"""/compare and /usage in-process: two fake model servers of different speed, a fake DCGM exporter."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.answering.answer import Answer
from bridge.commands.compare import (
    NO_QUESTION,
    CompareError,
    CompareRequest,
    format_comparison,
    parse_compare,
    question_and_context,
)
from bridge.config import EnergySettings, ModelSettings
from bridge.history.index import HistoryIndex
from bridge.language.catalog import speaking
from bridge.messages import HistoryRecord
from bridge.models.energy import Energy, PrometheusSource
from bridge.state.chats import Turn
from bridge.state.db import StateDB
from bridge.state.usage import AnswerUsage, UsageRow, format_summary, record
from tests.fakes.dcgm_exporter import FakeDcgm
from tests.fakes.openai_server import Behaviour, FakeOpenAI, retrieved_history
from tests.harness import Harness
from tests.helpers import eventually, model_for

WHEN = datetime(2024, 5, 3, 18, 30, tzinfo=UTC)


@pytest.fixture
async def seeded(history: HistoryIndex) -> HistoryIndex:
    await history.add("alice", [HistoryRecord(
        id="1", person="alice", channel="whatsapp", conversation="Family", author="Anna", time=WHEN,
        text="The spare key for the cabin is under the blue flower pot.", source="whatsapp:family.zip",
    )])  # fmt: skip
    return history


@pytest.fixture
async def slow_llm() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI(model="slow-model", answer=lambda m: "Under the blue flower pot, I believe [1]").start()
    yield server
    await server.stop()


@pytest.fixture
async def dcgm() -> AsyncIterator[FakeDcgm]:
    server = await FakeDcgm().start()
    yield server
    await server.stop()


class SteppingClock:
    """A clock that moves on by one step each time it is read: readings, not the machine's load, make time."""

    def __init__(self, step_s: float = 0.25) -> None:
        self.step_s = step_s
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


def metered(models: dict[str, ModelSettings], dcgm: FakeDcgm, clock: SteppingClock) -> Energy:
    """Energy from the fake exporter, its power gauge integrated on `clock`, handed to `assemble` as a part.

    The meter and the integral read the same clock, so an answer's average power is its GPU's draw exactly,
    however late the scrapes come back.
    """
    settings = EnergySettings(source="prometheus", prometheus_url=dcgm.url, prometheus_mode="power")
    gpus = {name: m.gpus for name, m in models.items()}
    return Energy(PrometheusSource(settings, clock), gpus, interval_s=0.1, clock=clock)


async def ask(h: Harness, text: str) -> str:
    before = len(h.adapter.delivered)
    await h.adapter.send("100", text)
    await eventually(lambda: len(h.adapter.delivered) > before, within_s=20)
    return h.adapter.delivered[-1].text


async def usage_rows(h: Harness) -> list[tuple[Any, ...]]:
    """(inbox id, person, model, energy Wh) of each recorded model answer."""
    assert h.db is not None
    query = "SELECT inbox_id, person, model, energy_wh FROM usage ORDER BY model"
    return [tuple(row) for row in await h.db.run(lambda c: c.execute(query).fetchall())]


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"\n── (\S+) ──\n", text)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


async def test_compare_streams_both_models_at_once_with_the_same_context_and_shows_their_cost(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, slow_llm: FakeOpenAI, dcgm: FakeDcgm,
    harness_factory: Callable[..., Harness],
) -> None:  # fmt: skip
    fake_llm.default = Behaviour(chunk_delay_s=0.05)
    slow_llm.default = Behaviour(chunk_delay_s=0.12)
    models = {"fast": model_for(fake_llm, gpus=[0]), "slow": model_for(slow_llm, gpus=[1])}
    clock = SteppingClock()
    async with harness_factory(models, energy=metered(models, dcgm, clock)) as h:
        await h.adapter.send("100", "/compare fast slow where is the spare key of the cabin?")
        await eventually(lambda: fake_llm.in_flight == 1 and slow_llm.in_flight == 1)  # both at once
        await eventually(lambda: h.adapter.delivered, within_s=20)
        [reply] = h.adapter.delivered
        usage_text = await ask(h, "/usage")
        rows = await usage_rows(h)
        [message_id] = {row[0] for row in rows}  # both answers belong to the one /compare message
        assert h.db is not None
        query = "SELECT outcome FROM inbox WHERE id=?"
        outcome = await h.db.run(lambda c: c.execute(query, (message_id,)).fetchone()[0])

    assert fake_llm.requests[0]["messages"] == slow_llm.requests[0]["messages"], "one retrieval, the same prompt"
    assert "under the blue flower pot" in retrieved_history(fake_llm.requests[0])
    parts = sections(reply.text)
    assert list(parts) == ["fast", "slow"]
    assert parts["fast"].startswith("You asked: where is the spare key of the cabin?")
    assert parts["slow"].startswith("Under the blue flower pot, I believe [1]")
    for part in parts.values():
        assert re.search(
            r"first token \d+\.\d\d s · total \d+\.\d\d s · \d+ tokens · [\d.]+ tokens/s · [\d.]+ Wh", part
        )
    watts = {name: float(re.findall(r"· (\d+) W$", part, re.M)[0]) for name, part in parts.items()}
    assert watts == {"fast": 300.0, "slow": 100.0}, "each answer's power is its own GPU's draw"
    assert reply.citations and reply.citations[0].excerpt.startswith("The spare key")

    assert outcome == "compared" and [r[1:3] for r in rows] == [("alice", "fast"), ("alice", "slow")]
    for _, _, name, energy_wh in rows:  # Wh = W x the meter's time, a whole number of the clock's steps
        steps = energy_wh * 3600 / watts[name] / clock.step_s
        assert steps >= 1 and steps == pytest.approx(round(steps), abs=1e-9)
    today = datetime.now(UTC).date().isoformat()
    assert f"{today} fast: 1 answer(s)" in usage_text and f"{today} slow: 1 answer(s)" in usage_text
    assert re.search(r"Total: 2 answer\(s\), \d+ tokens, [\d.]+ Wh\.", usage_text)


async def test_a_failing_model_is_labelled_and_the_other_answer_still_shown(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, slow_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    slow_llm.default = Behaviour(status=503)
    models = {"fast": model_for(fake_llm), "slow": model_for(slow_llm, retries=0)}
    async with harness_factory(models) as h:
        text = await ask(h, "/compare slow fast where is the key?")
        rows = await usage_rows(h)
    parts = sections(text)
    assert parts["slow"].startswith("⚠ slow failed: HTTP 503")
    assert "⏱" not in parts["slow"]
    assert parts["fast"].startswith("You asked: where is the key?") and "⏱ first token" in parts["fast"]
    assert [r[2:] for r in rows] == [("fast", None)], "only the answer that came is counted; energy not measured"


async def test_compare_without_a_question_reasks_the_last_one_and_names_unknown_models(
    seeded: HistoryIndex, fake_llm: FakeOpenAI, slow_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    models = {"fast": model_for(fake_llm), "slow": model_for(slow_llm)}
    async with harness_factory(models) as h:
        assert NO_QUESTION in await ask(h, "/compare fast slow")
        assert "no model 'nope'. Configured models: fast, slow." in await ask(h, "/compare fast nope")
        assert "Usage: /compare" in await ask(h, "/compare fast")
        assert fake_llm.requests == [] and slow_llm.requests == []
        await ask(h, "where is the spare key of the cabin?")
        text = await ask(h, "/compare slow fast")
        assert "No answers" not in await ask(h, "/usage 1")
    assert text.startswith("Comparing slow and fast on: “where is the spare key of the cabin?”")
    compared = fake_llm.requests[-1]["messages"]
    assert compared == slow_llm.requests[-1]["messages"]
    assert len(compared) == 2, "the earlier answer to this very question is not replayed to the models"
    assert compared[-1]["content"].startswith("where is the spare key of the cabin?\n\n")


@pytest.mark.parametrize(
    ("args", "result"),
    [
        (("a", "b"), CompareRequest(("a", "b"), None)),
        (("b", "a", "what", "now?"), CompareRequest(("b", "a"), "what now?")),
        (("a", "a", "x"), CompareRequest(("a", "a"), "x")),
        (("a",), "Usage: /compare"),
        (("a", "z"), "There is no model 'z'. Configured models: a, b."),
        (("y", "z", "q"), "There is no model 'y' and 'z'."),
    ],
)
def test_parse_compare(args: tuple[str, ...], result: CompareRequest | str) -> None:
    if isinstance(result, CompareRequest):
        assert parse_compare(args, ["a", "b"]) == result
    else:
        with pytest.raises(CompareError, match=re.escape(result)):
            parse_compare(args, ["a", "b"])


def test_compare_replies_in_the_replys_language() -> None:
    with speaking("de"):
        with pytest.raises(CompareError) as unknown:
            parse_compare(("a", "z"), ["a", "b"])
        with pytest.raises(CompareError) as no_question:
            question_and_context(CompareRequest(("a", "b"), None), [], 6)
    assert str(unknown.value) == "Ein Modell 'z' gibt es nicht. Konfigurierte Modelle: a, b."
    assert str(no_question.value).startswith("In diesem Chat gibt es keine frühere Frage zum Vergleichen.")
    assert "/compare MODELL_A MODELL_B" in str(no_question.value)
    answers = [Answer("A.", [], "fast", None, fallback=True), Answer("B.", [], "slow", None, fallback=True)]
    with speaking("de"):
        reply = format_comparison("wo ist der Schlüssel?", answers)
    assert reply.startswith("Vergleich von fast und slow zu: „wo ist der Schlüssel?“\n")
    assert format_comparison("q", answers).startswith("Comparing fast and slow on: “q”"), "English again outside"


def test_question_and_context() -> None:
    turns = [Turn("user", "q1"), Turn("assistant", "a1"), Turn("user", "q2"), Turn("assistant", "a2")]
    assert question_and_context(CompareRequest(("a", "b"), None), turns, 6) == ("q2", turns[:2])
    assert question_and_context(CompareRequest(("a", "b"), None), turns, 0) == ("q2", [])
    assert question_and_context(CompareRequest(("a", "b"), "new"), turns, 2) == ("new", turns[2:])
    with pytest.raises(CompareError):
        question_and_context(CompareRequest(("a", "b"), None), [], 6)


async def test_usage_rows_live_in_the_state_schema(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.db")
    await db.open()
    try:
        await db.run(lambda c: record(c, 7, "alice", AnswerUsage("m", 10, 5, 0.1, 1.1, None, None), at=0.0))
        rows = await db.run(lambda c: c.execute("SELECT inbox_id, person, model, day, energy_wh FROM usage").fetchall())
    finally:
        await db.close()
    assert [tuple(row) for row in rows] == [(7, "alice", "m", "1970-01-01", None)]


def test_usage_says_when_the_model_server_did_not_report_the_prompt_tokens() -> None:
    rows = [UsageRow("2026-11-30", "local", 1, 0, 13, None, 0), UsageRow("2026-11-30", "qwen", 2, 900, 80, 0.5, 2)]
    text = format_summary(rows, 7)
    assert "local: 1 answer(s), tokens in not reported, 13 out, energy not measured" in text
    assert "qwen: 2 answer(s), 900 tokens in, 80 out, 0.5000 Wh" in text
