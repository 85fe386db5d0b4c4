"""Charts for /compare and /usage: PNGs drawn on this host with matplotlib's Agg renderer, nothing sent anywhere.

Each chart comes with the data that was drawn, read back from the figure's artists after rendering, so a test
can compare what is on the chart with what was measured (values, not pixels), and with a one-line description
for platforms that show text beside an image or cannot show images. Titles, labels and descriptions are in the
reply's language (bridge/language/catalog.py): a chart drawn off the event loop (`asyncio.to_thread`) keeps it.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from bridge.language.catalog import current_language, say
from bridge.models.energy import Trace
from bridge.state.usage import AnswerUsage, UsageRow, first_token_text, format_wh, rate_text

if TYPE_CHECKING:
    from matplotlib.container import BarContainer
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 4.5, 100  # 800x450 px: readable on a phone, some tens of KB
USAGE_PANELS_HEIGHT_IN = 6.0  # tokens and energy one above the other
LABELLED_BARS = 40  # more bars than this: no answer counts on them, they would overlap

# matplotlib leaves locking to its users: its figures are built here without pyplot (no global figure, backend
# or rc changes), but its font and text caches are shared, and charts are rare, so one is drawn at a time.
_drawing = threading.Lock()

Points = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Chart:
    png: bytes
    title: str
    alt: str  # one line describing the chart, for platforms without images and for screen readers
    # What was drawn, per model (usage: per "<model> tokens" and "<model> Wh"), as read back from the figure.
    # compare: (seconds, watts or tokens so far); usage: (day as a matplotlib date number, tokens or Wh).
    lines: dict[str, Points]


@dataclass(frozen=True)
class ChartSeries:
    """One model's answer on the /compare chart."""

    model: str
    trace: Trace
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    energy_wh: float | None = None

    @classmethod
    def of(cls, trace: Trace, usage: AnswerUsage) -> ChartSeries:
        return cls(usage.model, trace, usage.ttft_s, usage.tokens_per_s, usage.energy_wh)

    @property
    def label(self) -> str:
        name = f"{self.model}: {format_wh(self.energy_wh)}" if self.energy_wh is not None else self.model
        return ", ".join([name, first_token_text(self.ttft_s), rate_text(self.tokens_per_s)])


def compare_chart(series: Sequence[ChartSeries]) -> Chart:
    """Each answer's GPU power over its seconds (area: its energy), or its tokens over time where any lacks power.

    Both axes count from each answer's own start, so answers that ran one after the other lie on top of each other.
    """
    powered = bool(series) and all(s.trace.power for s in series)
    if powered:
        title = say("GPU power over each answer (the area is its energy)")
    else:
        unpowered = [s.model for s in series if not s.trace.power]
        if len(unpowered) == len(series):
            title = say("no energy source: tokens over time")
        else:
            title = say("no energy source for {models}: tokens over time", models=", ".join(unpowered))
    with _drawing:
        figure = _figure(HEIGHT_IN)
        axes = figure.add_subplot()
        drawn: dict[str, Line2D] = {}
        for key, s in zip(_unique(s.model for s in series), series, strict=True):
            # Both lines start at the answer's start: power steps are drawn back to the previous reading
            # ("steps-pre": the watts of an interval are at its end), tokens forward to the next one.
            points = [(0.0, 0.0), *(s.trace.power if powered else s.trace.tokens)]
            xs, ys = [x for x, _ in points], [y for _, y in points]
            (line,) = axes.plot(xs, ys, drawstyle="steps-pre" if powered else "steps-post", label=s.label)
            if powered:
                axes.fill_between(xs, ys, step="pre", alpha=0.25, color=line.get_color())
            if s.ttft_s is not None:
                axes.axvline(s.ttft_s, color=line.get_color(), linestyle=":", linewidth=1)
            drawn[key] = line
        axes.set_title(title)
        axes.set_xlabel(say("seconds since the answer started (dotted: first token)"))
        axes.set_ylabel(say("GPU power attributed to the answer (W)") if powered else say("tokens so far"))
        axes.set_xlim(left=0)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        if drawn:
            figure.legend(loc="outside lower center", fontsize="small")
        png = _png(figure)
        lines = {key: _points(line) for key, line in drawn.items()}
    alt = f"{title}. " + "; ".join(s.label for s in series)
    return Chart(png, title, alt, lines)


def usage_chart(rows: Sequence[UsageRow]) -> Chart:
    """Tokens (in + out) per day and model as grouped bars with the answers on them; below, the energy where known."""
    days = sorted({r.day for r in rows})
    models = sorted({r.model for r in rows})
    measured = any(r.energy_wh is not None for r in rows)
    if not rows:
        title = say("No answers in this period")
    elif days[0] == days[-1]:
        title = say("Usage per day and model, on {day} (UTC)", day=days[0])
    else:
        title = say("Usage per day and model, {first} to {last} (UTC)", first=days[0], last=days[-1])
    width = 0.8 / max(1, len(models))
    with _drawing:
        from matplotlib.dates import AutoDateLocator, DayLocator, date2num
        from matplotlib.ticker import FuncFormatter, StrMethodFormatter

        figure = _figure(USAGE_PANELS_HEIGHT_IN if measured else HEIGHT_IN)
        panels = figure.subplots(2 if measured else 1, 1, sharex=True, squeeze=False)[:, 0]
        tokens_axes, energy_axes = panels[0], (panels[1] if measured else None)
        drawn: dict[str, tuple[BarContainer, float]] = {}
        partly = False
        for i, model in enumerate(models):
            mine = [r for r in rows if r.model == model]
            # Grouped: each model's bar beside the others', within its day (offsets under half a day).
            offset = (i - (len(models) - 1) / 2) * width
            xs = [date2num(date.fromisoformat(r.day)) + offset for r in mine]
            tokens = [r.prompt_tokens + r.completion_tokens for r in mine]
            bars = tokens_axes.bar(xs, tokens, width, color=f"C{i}", label=model)
            if len(rows) <= LABELLED_BARS:
                tokens_axes.bar_label(bars, labels=[str(r.answers) for r in mine], fontsize=9)
            drawn[f"{model} tokens"] = (bars, offset)
            if energy_axes is not None:
                known = [(x, r) for x, r in zip(xs, mine, strict=True) if r.energy_wh is not None]
                wh = [r.energy_wh for _, r in known if r.energy_wh is not None]
                bars = energy_axes.bar([x for x, _ in known], wh, width, color=f"C{i}")
                for bar, (_, r) in zip(bars, known, strict=True):
                    if r.measured < r.answers:  # hatched: only some of that day's answers were measured
                        bar.set_hatch("//")
                        partly = True
                drawn[f"{model} Wh"] = (bars, offset)
        tokens_axes.set_title(title + ("" if measured or not rows else "\n" + say("energy not measured")))
        tokens_axes.set_ylabel(say("tokens (in + out)"))
        tokens_axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        if len(rows) <= LABELLED_BARS:
            tokens_axes.margins(y=0.15)  # room for the answer counts above the highest bar
        if energy_axes is not None:
            unmeasured = [m for m in models if all(r.energy_wh is None for r in rows if r.model == m)]
            notes = [
                say("energy attributed by tokens"),
                *([say("hatched: some answers not measured")] if partly else []),
                *([say("not measured: {models}", models=", ".join(unmeasured))] if unmeasured else []),
            ]
            energy_axes.set_ylabel(say("GPU energy (Wh)"))
            energy_axes.set_title("; ".join(notes), fontsize="small")
        if not rows:
            tokens_axes.set_axis_off()  # the title alone: a date axis around nothing would only puzzle
        bottom = panels[-1]
        if rows:
            first, last = date2num(date.fromisoformat(days[0])), date2num(date.fromisoformat(days[-1]))
            bottom.set_xlim(first - 0.6, last + 0.6)  # whole days: a bar group is centred on its day
            # A tick per day up to two weeks, never hours between; the days named in the reply's language.
            bottom.xaxis.set_major_locator(DayLocator() if last - first <= 14 else AutoDateLocator(maxticks=10))
            bottom.xaxis.set_major_formatter(FuncFormatter(_day_label(current_language())))
        for axes in panels:
            axes.grid(axis="y", alpha=0.3)
        if models:
            legend = say("model (answers on the bars)") if len(rows) <= LABELLED_BARS else say("model")
            figure.legend(loc="outside lower center", ncols=min(len(models), 4), title=legend)
        png = _png(figure)
        lines = {key: _bar_points(bars, offset) for key, (bars, offset) in drawn.items()}
    alt = f"{title}: " + "; ".join(_usage_text(model, [r for r in rows if r.model == model]) for model in models)
    return Chart(png, title, alt.removesuffix(": "), lines)


def _usage_text(model: str, rows: list[UsageRow]) -> str:
    answers = sum(r.answers for r in rows)
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in rows)
    known = [r.energy_wh for r in rows if r.energy_wh is not None]
    energy = format_wh(sum(known)) if known else say("energy not measured")
    return say(
        "{model} {answers} answer(s), {tokens} tokens, {energy}",
        model=model,
        answers=answers,
        tokens=tokens,
        energy=energy,
    )


def _day_label(language: str) -> Callable[[float, int | None], str]:
    """A date axis tick's label: its day and month in `language` ("May 5", "5 mag", "5. Mai"), by Babel's CLDR
    data rather than the C locale's month names."""
    from babel.dates import format_skeleton
    from matplotlib.dates import num2date

    def label(x: float, _position: int | None = None) -> str:
        return str(format_skeleton("MMMd", num2date(x).date(), locale=language))

    return label


def _unique(names: Iterable[str]) -> list[str]:
    """Keys for the drawn lines: /compare may put one model against itself."""
    keys: list[str] = []
    for name in names:
        key, n = name, 1
        while key in keys:
            n += 1
            key = f"{name} ({n})"
        keys.append(key)
    return keys


def _figure(height_in: float) -> Figure:
    # Imported here: only hosts that draw charts pay matplotlib's import (and its font cache on first use).
    # A Figure without pyplot touches no global backend; it renders through the Agg canvas in _png.
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")


def _png(figure: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer, metadata={"Software": None})  # draws; no version in the file
    return buffer.getvalue()


def _points(line: Line2D) -> Points:
    import numpy as np

    return tuple((float(x), float(y)) for x, y in np.asarray(line.get_xydata(), dtype=float).tolist())


def _bar_points(bars: BarContainer, offset: float) -> Points:
    # A bar's x is its left edge; its day is its centre less the model's offset within the day.
    return tuple((float(round(b.get_x() + b.get_width() / 2 - offset)), float(b.get_height())) for b in bars)
