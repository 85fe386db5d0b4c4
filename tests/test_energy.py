"""Energy per answer: the attribution arithmetic (tables), the meter, and the NVML and Prometheus sources."""

from __future__ import annotations

import asyncio
import itertools
import sys
import types
from collections.abc import Mapping

import pytest

from bridge.config import EnergySettings, ModelSettings
from bridge.models.energy import (
    Energy,
    EnergyUnavailable,
    Meter,
    NvmlSource,
    attribute,
    open_energy,
    parse_exposition,
    power_steps,
    split_interval,
    trapezoid,
)
from tests.fakes.dcgm_exporter import ENERGY, POWER, FakeDcgm

# (description, intervals of (energy J, tokens per answer), expected energy per answer)
ATTRIBUTION = [
    ("one answer alone gets every interval", [(100.0, {"a": 5}), (50.0, {"a": 20})], {"a": 150.0}),
    ("two overlapping answers, different token rates",
     [(90.0, {"a": 3}), (120.0, {"a": 3, "b": 1}), (60.0, {"a": 1, "b": 2}), (30.0, {"b": 4})],
     {"a": 90.0 + 90.0 + 20.0, "b": 30.0 + 40.0 + 30.0}),
    ("an interval with zero tokens is shared equally (prefill)", [(40.0, {"a": 0, "b": 0}), (30.0, {"a": 2, "b": 1})],
     {"a": 20.0 + 20.0, "b": 20.0 + 10.0}),
    ("an answer that produced nothing in an interval gets nothing of it", [(60.0, {"a": 6, "b": 0})],
     {"a": 60.0, "b": 0.0}),
    ("energy while no answer runs belongs to nobody", [(500.0, {}), (10.0, {"a": 1})], {"a": 10.0}),
]  # fmt: skip


@pytest.mark.parametrize(("intervals", "expected"), [c[1:] for c in ATTRIBUTION], ids=[c[0] for c in ATTRIBUTION])
def test_attribution(intervals: list[tuple[float, Mapping[str, int]]], expected: dict[str, float]) -> None:
    shares = attribute(intervals)
    assert shares == pytest.approx(expected)
    assert sum(shares.values()) == pytest.approx(sum(e for e, tokens in intervals if tokens))


def test_split_interval_conserves_energy() -> None:
    assert split_interval(10.0, {}) == {}
    assert sum(split_interval(7.0, {"a": 1, "b": 2, "c": 4}).values()) == pytest.approx(7.0)


@pytest.mark.parametrize(
    ("samples", "joules"),
    [
        ([], 0.0),
        ([(0.0, 300.0)], 0.0),
        ([(0.0, 300.0), (2.0, 300.0)], 600.0),
        ([(0.0, 100.0), (1.0, 300.0)], 200.0),  # a ramp: the mean of both ends
        ([(0.0, 100.0), (1.0, 300.0), (3.0, 300.0)], 800.0),
    ],
)
def test_trapezoid(samples: list[tuple[float, float]], joules: float) -> None:
    assert trapezoid(samples) == pytest.approx(joules)


def test_parse_dcgm_exposition() -> None:
    text = FakeDcgm(base_mj=1000).exposition()  # not started: counters read as of the monotonic clock's origin
    assert parse_exposition(text, POWER, "gpu") == {0: 300.0, 1: 100.0}
    energy = parse_exposition(text, ENERGY, "gpu")
    assert set(energy) == {0, 1} and all(v >= 1000 for v in energy.values())
    assert parse_exposition(text, ENERGY + "_total", "gpu") == energy
    assert parse_exposition(text, "NO_SUCH_METRIC", "gpu") == {}


class ScriptedSource:
    """Cumulative joules set by the test between readings."""

    name = "scripted"

    def __init__(self) -> None:
        self.joules = 0.0
        self.fail = False
        self.reads = 0

    async def read(self, gpus: tuple[int, ...]) -> float:
        self.reads += 1
        if self.fail:
            raise ConnectionError("exporter down")
        return self.joules

    async def close(self) -> None:
        pass


async def test_meter_shares_each_interval_by_tokens() -> None:
    source = ScriptedSource()
    meter = Meter((0,), source, interval_s=3600)  # no periodic readings: only at join and leave
    a = await meter.join()
    source.joules += 100.0  # a alone (prefill, then 4 tokens)
    a.add_tokens(4)
    b = await meter.join()  # reading: 100 J to a
    source.joules += 90.0
    a.add_tokens(2)
    b.add_tokens(1)
    use_a = await meter.leave(a)  # reading: 60 J to a, 30 J to b
    source.joules += 40.0  # b alone, even without tokens
    use_b = await meter.leave(b)
    assert use_a is not None and use_b is not None
    assert use_a.joules == pytest.approx(160.0) and use_b.joules == pytest.approx(70.0)
    source.joules += 1000.0  # idle: nobody's
    c = await meter.join()
    source.joules += 5.0
    use_c = await meter.leave(c)
    assert use_c is not None and use_c.joules == pytest.approx(5.0)


class FakeClock:
    """The meter's clock, set by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def flat(pairs: tuple[tuple[float, float], ...] | list[tuple[float, float]]) -> list[float]:
    return [value for pair in pairs for value in pair]


def step_area(power: tuple[tuple[float, float], ...]) -> float:
    """Joules under (end s, watts) steps that start at 0 s: each step's watts times its interval."""
    ends = [0.0, *(t for t, _ in power)]
    return sum(w * (t1 - t0) for (t0, t1), (_, w) in zip(itertools.pairwise(ends), power, strict=True))


async def test_two_answers_on_one_gpu_get_power_steps_whose_area_is_their_energy() -> None:
    source, clock = ScriptedSource(), FakeClock()
    meter = Meter((0,), source, interval_s=3600, clock=clock)
    a = await meter.join()  # t=0 for a
    clock.now += 0.5
    a.add_tokens(4)
    clock.now += 1.5
    source.joules += 100.0  # [0, 2] s: a alone, 50 W
    b = await meter.join()  # t=2 for a, t=0 for b
    clock.now += 1.0
    a.add_tokens(2)
    b.add_tokens(1)
    clock.now += 2.0
    source.joules += 90.0  # [2, 5] s of a: 60 J to a (20 W), 30 J to b (10 W)
    use_a = await meter.leave(a)
    clock.now += 4.0
    source.joules += 40.0  # b alone for 4 s: 10 W
    use_b = await meter.leave(b)
    assert use_a is not None and use_b is not None
    assert flat(a.trace.power) == pytest.approx([2.0, 50.0, 5.0, 20.0])
    assert flat(b.trace.power) == pytest.approx([3.0, 10.0, 7.0, 10.0])
    assert step_area(a.trace.power) == pytest.approx(use_a.joules) == pytest.approx(160.0)
    assert step_area(b.trace.power) == pytest.approx(use_b.joules) == pytest.approx(70.0)
    assert a.trace.tokens == ((0.5, 4), (3.0, 6)) and b.trace.tokens == ((1.0, 1),)
    assert use_a.seconds == a.trace.power[-1][0] and use_b.seconds == b.trace.power[-1][0]


def test_an_interval_of_no_length_adds_its_energy_to_a_step_with_length() -> None:
    steps = power_steps([(0.0, 0.0, 5.0), (0.0, 2.0, 10.0), (2.0, 3.0, 4.0), (3.0, 3.0, 2.0)])
    assert flat(steps) == pytest.approx([2.0, 7.5, 3.0, 6.0])
    assert step_area(steps) == pytest.approx(21.0)
    assert power_steps([(1.0, 1.0, 3.0)]) == ()


async def test_without_an_energy_source_the_trace_has_tokens_over_time_only() -> None:
    clock = FakeClock()
    energy = Energy(None, {"m": [0]}, clock=clock)
    async with energy.measure("m") as measurement:
        clock.now += 0.25
        measurement.add_tokens(1)
        clock.now += 0.5
        measurement.add_tokens(3)
    assert measurement.use is None and measurement.started is None
    assert measurement.trace.power == ()
    assert measurement.trace.tokens == ((0.25, 1), (0.75, 4))


async def test_a_failed_reading_leaves_no_power_in_the_trace() -> None:
    source, clock = ScriptedSource(), FakeClock()
    meter = Meter((0,), source, interval_s=3600, clock=clock)
    m = await meter.join()
    clock.now += 1.0
    m.add_tokens(2)
    source.fail = True
    assert await meter.leave(m) is None
    assert m.trace.power == () and m.trace.tokens == ((1.0, 2),)


async def test_meter_reads_periodically_while_answers_run() -> None:
    source = ScriptedSource()
    meter = Meter((0,), source, interval_s=0.05)
    m = await meter.join()
    await asyncio.sleep(0.3)
    await meter.leave(m)
    reads = source.reads
    assert reads >= 4, "the meter should read every interval while an answer runs"
    await asyncio.sleep(0.2)
    assert source.reads == reads, "no readings once no answer runs"


async def test_a_failed_reading_gives_no_energy_rather_than_a_wrong_one() -> None:
    source = ScriptedSource()
    errors: list[str] = []
    meter = Meter((0,), source, interval_s=3600, on_error=errors.append)
    m = await meter.join()
    source.fail = True
    assert await meter.leave(m) is None
    assert errors == ["energy"]
    source.fail = False
    m = await meter.join()
    source.joules += 12.0
    use = await meter.leave(m)
    assert use is not None and use.joules == pytest.approx(12.0), "the next answer is measured again"


@pytest.mark.parametrize("mode", ["energy", "power"])
async def test_prometheus_source_reads_the_dcgm_exporter(mode: str) -> None:
    dcgm = await FakeDcgm().start()
    settings = EnergySettings(source="prometheus", prometheus_url=dcgm.url, prometheus_mode=mode, interval_s=0.05)
    models = {
        "big": ModelSettings(base_url="http://127.0.0.1:1/v1", model="b", gpus=[0]),
        "small": ModelSettings(base_url="http://127.0.0.1:1/v1", model="s", gpus=[1]),
        "both": ModelSettings(base_url="http://127.0.0.1:1/v1", model="x", gpus=[1, 0]),
    }
    try:
        async with open_energy(settings, models) as energy:
            uses = {}
            for name in models:
                async with energy.measure(name) as measurement:
                    measurement.add_tokens(10)
                    await asyncio.sleep(0.5)
                uses[name] = measurement.use
    finally:
        await dcgm.stop()
    for name, watts in (("big", 300.0), ("small", 100.0), ("both", 400.0)):
        use = uses[name]
        assert use is not None and use.avg_w is not None
        assert use.avg_w == pytest.approx(watts, rel=0.1), name
        assert use.wh == pytest.approx(watts * use.seconds / 3600, rel=0.1)


async def test_unreachable_exporter_does_not_stop_start_up_but_answers_are_unmeasured() -> None:
    dcgm = await FakeDcgm(fail=True).start()
    settings = EnergySettings(source="prometheus", prometheus_url=dcgm.url)
    models = {"m": ModelSettings(base_url="http://127.0.0.1:1/v1", model="m", gpus=[0])}
    try:
        async with open_energy(settings, models) as energy:
            async with energy.measure("m") as measurement:
                measurement.add_tokens(1)
    finally:
        await dcgm.stop()
    assert measurement.use is None and dcgm.scrapes >= 2


async def test_models_without_gpus_are_not_measured() -> None:
    energy = Energy(ScriptedSource(), {"m": []})
    async with energy.measure("m") as measurement:
        pass
    assert measurement.use is None


def fake_pynvml(monkeypatch: pytest.MonkeyPatch, init_error: str | None = None, count: int = 2) -> dict[int, int]:
    """A stand-in for nvidia-ml-py, so both paths run on any machine: mJ counters per GPU index."""
    counters = {i: 1_000_000 * (i + 1) for i in range(count)}
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init() -> None:
        if init_error:
            raise NVMLError(init_error)

    module.NVMLError = NVMLError  # type: ignore[attr-defined]
    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: count  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    module.nvmlDeviceGetTotalEnergyConsumption = lambda h: counters[h]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return counters


async def test_nvml_without_driver_fails_at_start_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pynvml(monkeypatch, init_error="NVML Shared Library Not Found")
    settings = EnergySettings(source="nvml")
    models = {"m": ModelSettings(base_url="http://127.0.0.1:1/v1", model="m", gpus=[0])}
    with pytest.raises(EnergyUnavailable) as error:
        async with open_energy(settings, models):
            pass
    assert "NVML Shared Library Not Found" in str(error.value) and "NVIDIA driver" in str(error.value)


async def test_nvml_unknown_gpu_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pynvml(monkeypatch, count=1)
    with pytest.raises(EnergyUnavailable, match="GPU 3 is configured for energy, but NVML sees 1 GPU"):
        NvmlSource([0, 3])


async def test_nvml_reads_total_energy_in_millijoules(monkeypatch: pytest.MonkeyPatch) -> None:
    counters = fake_pynvml(monkeypatch)
    source = NvmlSource([0, 1])
    before = await source.read((0, 1))
    counters[0] += 30_000  # 30 J
    counters[1] += 10_000
    assert await source.read((0, 1)) - before == pytest.approx(40.0)
    assert await source.read((1,)) == pytest.approx(counters[1] / 1000)
    await source.close()


def test_prometheus_source_needs_an_http_url() -> None:
    with pytest.raises(ValueError, match="prometheus_url is required"):
        EnergySettings(source="prometheus")
    with pytest.raises(ValueError, match="must start with http"):
        EnergySettings(source="prometheus", prometheus_url="127.0.0.1:9400/metrics")
