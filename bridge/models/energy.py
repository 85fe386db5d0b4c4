"""Energy per answer: GPU energy read around each answer and attributed among the answers sharing the GPUs.

A source gives the cumulative energy (J) of a set of GPUs: NVML's total-energy counter, a Prometheus
counter (DCGM exporter's DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, mJ), or a Prometheus power gauge (W)
integrated with the trapezoid rule. One meter per GPU set reads it while answers run: whenever an
answer starts or ends, and every `interval_s` in between. The energy of each interval is shared
among the answers running on those GPUs in proportion to the tokens each produced in it. This is an
attribution, not a measurement of one request: a GPU's draw cannot be split by request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import httpx

from bridge.config import EnergySettings, ModelSettings

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
Gpus = tuple[int, ...]


class EnergyUnavailable(Exception):
    """The configured energy source cannot be used (no NVIDIA driver, unknown GPU, unsupported counter)."""


# -- the arithmetic (pure) -------------------------------------------------------------------------


def split_interval(energy_j: float, tokens: Mapping[K, int]) -> dict[K, float]:
    """One interval's energy shared among the answers running in it, in proportion to their tokens.

    An interval in which the running answers produced no token (prefill, waiting for the first token)
    is shared equally among them; with no answer running the energy is idle and belongs to nobody.
    """
    if not tokens:
        return {}
    total = sum(tokens.values())
    if total <= 0:
        return {key: energy_j / len(tokens) for key in tokens}
    return {key: energy_j * count / total for key, count in tokens.items()}


def attribute(intervals: Iterable[tuple[float, Mapping[K, int]]]) -> dict[K, float]:
    """Each answer's energy: the sum of its shares of every interval (energy J, tokens per answer)."""
    totals: dict[K, float] = {}
    for energy_j, tokens in intervals:
        for key, share in split_interval(energy_j, tokens).items():
            totals[key] = totals.get(key, 0.0) + share
    return totals


def trapezoid(samples: Sequence[tuple[float, float]]) -> float:
    """Energy (J) from power samples (time s, power W), integrated with the trapezoid rule."""
    return sum((w0 + w1) / 2 * (t1 - t0) for (t0, w0), (t1, w1) in itertools.pairwise(samples))


def parse_exposition(text: str, metric: str, label: str) -> dict[int, float]:
    """Values of one metric per GPU index from the Prometheus text format (DCGM exporter style)."""
    from prometheus_client.parser import text_string_to_metric_families

    family_name = metric.removesuffix("_total")
    values: dict[int, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != family_name:
            continue
        for sample in family.samples:
            # The parser names a counter's samples "<name>_total"; "_created" samples are not values.
            if sample.name.endswith("_created") or label not in sample.labels:
                continue
            try:
                values[int(sample.labels[label])] = float(sample.value)
            except ValueError:
                continue
    return values


@dataclass(frozen=True)
class EnergyUse:
    joules: float
    seconds: float

    @property
    def wh(self) -> float:
        return self.joules / 3600.0

    @property
    def avg_w(self) -> float | None:
        return self.joules / self.seconds if self.seconds > 0 else None


# -- sources ---------------------------------------------------------------------------------------


class EnergySource(Protocol):
    name: str

    async def read(self, gpus: Gpus) -> float:
        """Cumulative energy in joules of these GPUs together (only differences are meaningful)."""
        ...

    async def close(self) -> None: ...


class NvmlSource:
    """NVML's total energy counter (mJ since the driver loaded), Volta or newer."""

    name = "nvml"

    def __init__(self, gpus: Iterable[int]) -> None:
        try:
            import pynvml  # lazily: only hosts that configure NVML need the driver
        except ImportError as exc:
            raise EnergyUnavailable(f"CONFIDE_ENERGY__SOURCE=nvml needs nvidia-ml-py: {exc}") from None
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise EnergyUnavailable(
                f"CONFIDE_ENERGY__SOURCE=nvml, but NVML cannot start ({exc}): is the NVIDIA driver installed "
                "and a GPU visible to this process? Use CONFIDE_ENERGY__SOURCE=none or prometheus otherwise."
            ) from None
        self._handles: dict[int, Any] = {}
        try:
            count = pynvml.nvmlDeviceGetCount()
            for index in sorted(set(gpus)):
                if index >= count:
                    raise EnergyUnavailable(f"GPU {index} is configured for energy, but NVML sees {count} GPU(s)")
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # fails now, not mid-answer, if unsupported
                self._handles[index] = handle
        except pynvml.NVMLError as exc:
            pynvml.nvmlShutdown()
            raise EnergyUnavailable(f"NVML cannot read total energy of the configured GPUs: {exc}") from None
        except EnergyUnavailable:
            pynvml.nvmlShutdown()
            raise

    async def read(self, gpus: Gpus) -> float:
        return await asyncio.to_thread(self._read, gpus)

    def _read(self, gpus: Gpus) -> float:
        get = self._nvml.nvmlDeviceGetTotalEnergyConsumption
        return sum(get(self._handles[index]) for index in gpus) / 1000.0

    async def close(self) -> None:
        self._nvml.nvmlShutdown()


class PrometheusSource:
    """A Prometheus endpoint: an energy counter in mJ, or a power gauge in W integrated over time."""

    name = "prometheus"

    def __init__(self, settings: EnergySettings, clock: Callable[[], float] = time.monotonic) -> None:
        assert settings.prometheus_url is not None
        self.url = settings.prometheus_url
        self.settings = settings
        self.clock = clock  # the power integral's time: the meter's clock, so a test's clock makes watts exact
        # trust_env=False: no proxy from the environment; only the configured host is contacted.
        self._client = httpx.AsyncClient(timeout=settings.timeout_s, trust_env=False)
        self._integrals: dict[Gpus, tuple[float, float, float]] = {}  # gpus -> (time, watts, joules so far)

    async def values(self, metric: str) -> dict[int, float]:
        response = await self._client.get(self.url)
        response.raise_for_status()
        return parse_exposition(response.text, metric, self.settings.gpu_label)

    async def read(self, gpus: Gpus) -> float:
        energy_mode = self.settings.prometheus_mode == "energy"
        metric = self.settings.energy_metric if energy_mode else self.settings.power_metric
        values = await self.values(metric)
        now = self.clock()
        missing = [g for g in gpus if g not in values]
        if missing:
            raise LookupError(f"{metric} has no sample for {self.settings.gpu_label}={missing} at {self.url}")
        total = sum(values[g] for g in gpus)
        if energy_mode:
            return total / 1000.0  # mJ
        previous = self._integrals.get(gpus)
        joules = 0.0 if previous is None else previous[2] + trapezoid([previous[:2], (now, total)])
        self._integrals[gpus] = (now, total, joules)
        return joules

    async def close(self) -> None:
        await self._client.aclose()


# -- the meter -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """One answer over its seconds: power attributed to it per reading interval, and tokens as they came."""

    power: tuple[tuple[float, float], ...]  # (seconds since the answer started, watts) at the end of each interval
    tokens: tuple[tuple[float, int], ...]  # (seconds since the answer started, tokens so far) at each add_tokens


@dataclass(eq=False)
class Measurement:
    """One answer on a meter: tokens since the last reading, energy attributed so far, and both over time."""

    pending_tokens: int = 0
    joules: float = 0.0
    started: float | None = None  # the meter's reading at the start; None: energy not measured
    ended: float | None = None
    failed: bool = False
    clock: Callable[[], float] = time.monotonic
    intervals: list[tuple[float, float, float]] = field(default_factory=list)  # (start s, end s, its joules)
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (s, tokens so far) at each add_tokens
    # Time zero of both timelines, measured or not: the meter's start reading when there is one (Meter.join).
    origin: float = field(init=False)

    def __post_init__(self) -> None:
        self.origin = self.started if self.started is not None else self.clock()

    def add_tokens(self, count: int = 1) -> None:
        self.pending_tokens += count
        so_far = (self.timeline[-1][1] if self.timeline else 0) + count
        self.timeline.append((self.clock() - self.origin, so_far))

    @property
    def use(self) -> EnergyUse | None:
        if self.failed or self.started is None or self.ended is None:
            return None
        return EnergyUse(self.joules, self.ended - self.started)

    @property
    def trace(self) -> Trace:
        """Power per interval (none when the energy is not known) and the tokens, from the answer's start."""
        power = () if self.failed or self.started is None else power_steps(self.intervals)
        return Trace(power, tuple(self.timeline))


def power_steps(intervals: Sequence[tuple[float, float, float]]) -> tuple[tuple[float, float], ...]:
    """(end s, watts) steps from contiguous intervals (start s, end s, joules): each step's area is its joules.

    An interval of no length (two readings within one clock tick) has no power of its own: its joules go into
    the next interval that has a length, or else the last one, so the area under the steps stays the energy.
    """
    steps: list[list[float]] = []  # [end, joules, length]
    carried = 0.0
    for start, end, joules in intervals:
        carried += joules
        if end > start:
            steps.append([end, carried, end - start])
            carried = 0.0
    if steps:
        steps[-1][1] += carried
    return tuple((end, joules / length) for end, joules, length in steps)


@dataclass
class Meter:
    """The answers running on one GPU set, and the readings that share its energy among them."""

    gpus: Gpus
    source: EnergySource
    interval_s: float
    on_error: Callable[[str], None] = lambda kind: None
    clock: Callable[[], float] = time.monotonic
    _active: list[Measurement] = field(default_factory=list)
    _last: float | None = None
    _last_at: float | None = None  # when _last was read
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _sampler: asyncio.Task[None] | None = None

    async def join(self) -> Measurement:
        measurement = Measurement(clock=self.clock)
        async with self._lock:
            at = await self._sample()  # closes the running interval for the others, opens this one's
            measurement.started = at
            measurement.failed = at is None
            if at is not None:
                measurement.origin = at  # its power intervals and tokens count from the same reading
            self._active.append(measurement)
            if self._sampler is None:
                self._sampler = asyncio.create_task(self._sample_periodically(), name=f"energy-{self.gpus}")
        return measurement

    async def leave(self, measurement: Measurement) -> EnergyUse | None:
        async with self._lock:
            at = await self._sample()
            measurement.ended = at
            measurement.failed = measurement.failed or at is None
            self._active.remove(measurement)
            if not self._active and self._sampler is not None:
                self._sampler.cancel()
                self._sampler = None
                self._last = None  # idle energy until the next answer belongs to nobody
        return measurement.use

    async def _sample_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            async with self._lock:
                await self._sample()

    async def _sample(self) -> float | None:
        """Read the source and share the interval since the last reading; the reading's time, None on error."""
        try:
            total = await self.source.read(self.gpus)
        except Exception as exc:
            # The interval is lost for the answers running now: their energy is unknown, not wrong.
            log.warning("energy reading of GPUs %s from %s failed: %s", list(self.gpus), self.source.name, exc)
            self.on_error("energy")
            for running in self._active:
                running.failed = True
            self._last = None
            return None
        at = self.clock()
        if self._last is not None and self._active:
            energy = max(0.0, total - self._last)  # a counter reset (driver reload) reads as nothing
            shares = split_interval(energy, {m: m.pending_tokens for m in self._active})
            assert self._last_at is not None
            for running, share in shares.items():
                running.joules += share
                running.pending_tokens = 0
                running.intervals.append((self._last_at - running.origin, at - running.origin, share))
        self._last = total
        self._last_at = at
        return at


class Energy:
    """Meters by GPU set, and which GPUs serve which model."""

    def __init__(
        self,
        source: EnergySource | None,
        model_gpus: Mapping[str, Iterable[int]],
        interval_s: float = 1.0,
        on_error: Callable[[str], None] = lambda kind: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.interval_s = interval_s
        self.on_error = on_error
        self.clock = clock
        self._gpus = {name: tuple(sorted(set(gpus))) for name, gpus in model_gpus.items() if gpus}
        self._meters: dict[Gpus, Meter] = {}

    @property
    def enabled(self) -> bool:
        return self.source is not None

    def gpus(self, model: str) -> Gpus:
        return self._gpus.get(model, ())

    @asynccontextmanager
    async def measure(self, model: str) -> AsyncIterator[Measurement]:
        """Around one answer; afterwards `measurement.use` is its energy (None: not measured)."""
        gpus = self.gpus(model)
        if self.source is None or not gpus:
            yield Measurement(failed=True, clock=self.clock)  # tokens over time still, from now
            return
        meter = self._meters.get(gpus)
        if meter is None:
            meter = self._meters[gpus] = Meter(gpus, self.source, self.interval_s, self.on_error, self.clock)
        measurement = await meter.join()
        try:
            yield measurement
        finally:
            await meter.leave(measurement)

    async def close(self) -> None:
        for meter in self._meters.values():
            if meter._sampler is not None:
                meter._sampler.cancel()
        if self.source is not None:
            await self.source.close()


def build_source(settings: EnergySettings, models: Mapping[str, ModelSettings]) -> EnergySource | None:
    if settings.source == "none":
        return None
    if settings.source == "nvml":
        return NvmlSource(g for m in models.values() for g in m.gpus)
    return PrometheusSource(settings)


@asynccontextmanager
async def open_energy(
    settings: EnergySettings,
    models: Mapping[str, ModelSettings],
    on_error: Callable[[str], None] = lambda kind: None,
) -> AsyncIterator[Energy]:
    """The energy meters; a source that cannot work on this host stops start-up here (EnergyUnavailable)."""
    source = build_source(settings, models)
    if source is not None:
        unmeasured = [name for name, m in models.items() if not m.gpus]
        if unmeasured:
            log.warning("energy is not measured for model(s) %s: set CONFIDE_MODELS__<NAME>__GPUS", unmeasured)
        if isinstance(source, PrometheusSource):
            await _probe(source, models)
    energy = Energy(source, {name: m.gpus for name, m in models.items()}, settings.interval_s, on_error)
    try:
        yield energy
    finally:
        await energy.close()


async def _probe(source: PrometheusSource, models: Mapping[str, ModelSettings]) -> None:
    # An exporter may start after Confide, so an unreachable one is a warning, not a refusal to start.
    for gpus in {tuple(sorted(m.gpus)) for m in models.values() if m.gpus}:
        try:
            await source.read(gpus)
        except Exception as exc:
            log.warning("energy source %s not usable yet for GPUs %s: %s", source.url, list(gpus), exc)
