"""Charts for /compare and /usage: the PNG, and the drawn data checked against what was measured (not pixels)."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from matplotlib.dates import date2num
from PIL import Image

from bridge.commands.charts import Chart, ChartSeries, compare_chart, usage_chart
from bridge.commands.handlers import _picture
from bridge.language.catalog import speaking
from bridge.messages import Image as ReplyImage
from bridge.models.energy import Energy, Measurement, Meter, Trace
from bridge.state.usage import AnswerUsage, UsageRow, format_wh
from tests.test_energy import FakeClock, ScriptedSource, step_area

REPO = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, the first after the signature."""
    assert png[:8] == PNG_SIGNATURE
    length, kind, width, height = struct.unpack(">I4sII", png[8:24])
    assert kind == b"IHDR" and length == 13
    return width, height


def assert_png(chart: Chart, width: int, height: int) -> None:
    assert png_size(chart.png) == (width, height)
    assert 5_000 < len(chart.png) < 150_000, len(chart.png)
    with Image.open(io.BytesIO(chart.png)) as image:
        image.load()  # decodes every row: a truncated or corrupt file fails here
        assert image.size == (width, height)
        colours = image.convert("RGB").getcolors(maxcolors=100_000)
        assert colours is not None and len(colours) > 10, "something is drawn, not a blank frame"


def usage(model: str, measurement: Measurement, ttft_s: float, total_s: float, tokens: int) -> AnswerUsage:
    use = measurement.use
    wh = use.wh if use is not None else None
    watts = use.avg_w if use is not None else None
    return AnswerUsage(model, 50, tokens, ttft_s, total_s, wh, watts)


async def two_answers_sharing_a_gpu() -> list[ChartSeries]:
    """A meter run with known counter readings: "big" runs 6 s, "small" joins at 2 s and leaves at 8 s."""
    source, clock = ScriptedSource(), FakeClock()
    meter = Meter((0,), source, interval_s=3600, clock=clock)
    big = await meter.join()
    clock.now += 0.75
    big.add_tokens(3)
    clock.now += 1.25
    source.joules += 500.0  # [0, 2] s of big, alone: 250 W
    small = await meter.join()
    clock.now += 1.0
    big.add_tokens(4)
    small.add_tokens(1)
    clock.now += 1.0
    source.joules += 300.0  # 240 J to big, 60 J to small
    await meter._sample()  # what the periodic reading does, at 4 s of big
    clock.now += 2.0
    big.add_tokens(1)
    small.add_tokens(3)
    source.joules += 200.0  # 50 J to big, 150 J to small
    await meter.leave(big)
    clock.now += 2.0
    small.add_tokens(2)
    source.joules += 120.0  # small alone
    await meter.leave(small)
    return [
        ChartSeries.of(big.trace, usage("big", big, 0.75, 6.0, 8)),
        ChartSeries.of(small.trace, usage("small", small, 1.0, 6.0, 6)),
    ]


async def test_compare_chart_draws_each_models_measured_power_and_its_energy() -> None:
    series = await two_answers_sharing_a_gpu()
    big, small = series
    assert [len(s.trace.power) for s in series] == [3, 3]

    chart = await asyncio.to_thread(compare_chart, series)

    assert_png(chart, 800, 450)
    assert set(chart.lines) == {"big", "small"}
    for s in series:
        # The drawn line is the measured steps, from the answer's start.
        assert chart.lines[s.model] == ((0.0, 0.0), *s.trace.power)
        # Its area (steps back to the previous reading) is the energy the legend and the text give.
        joules = step_area(chart.lines[s.model][1:])
        assert s.energy_wh == pytest.approx(joules / 3600)
        assert f"{s.model}: {format_wh(joules / 3600)}, first token {s.ttft_s:.2f} s" in chart.alt
    assert step_area(big.trace.power) == pytest.approx(500 + 240 + 50)
    assert step_area(small.trace.power) == pytest.approx(60 + 150 + 120)
    assert "tokens/s" in chart.alt and "energy" in chart.title
    assert "no energy source" not in chart.alt


async def test_without_an_energy_source_the_compare_chart_draws_tokens_over_time() -> None:
    clock = FakeClock()
    energy = Energy(None, {"a": [0], "b": [1]}, clock=clock)
    series = []
    for model, gaps in (("a", [0.5, 0.25, 0.25]), ("b", [0.125, 1.0])):
        async with energy.measure(model) as measurement:
            for gap in gaps:
                clock.now += gap
                measurement.add_tokens(2)
        series.append(ChartSeries.of(measurement.trace, usage(model, measurement, gaps[0], sum(gaps), 2 * len(gaps))))

    chart = compare_chart(series)

    assert_png(chart, 800, 450)
    assert chart.title == "no energy source: tokens over time" and chart.alt.startswith(chart.title)
    assert chart.lines == {
        "a": ((0.0, 0.0), (0.5, 2.0), (0.75, 4.0), (1.0, 6.0)),
        "b": ((0.0, 0.0), (0.125, 2.0), (1.125, 4.0)),
    }
    assert "Wh" not in chart.alt


async def test_one_answer_without_power_puts_both_on_tokens_over_time() -> None:
    measured, _ = await two_answers_sharing_a_gpu()
    unmeasured = ChartSeries("small", Trace((), ((0.5, 1), (1.5, 9))), 0.5, 8.0)
    chart = compare_chart([measured, unmeasured])
    assert chart.title == "no energy source for small: tokens over time"
    assert chart.lines["big"] == ((0.0, 0.0), *((t, float(n)) for t, n in measured.trace.tokens))
    assert chart.lines["small"] == ((0.0, 0.0), (0.5, 1.0), (1.5, 9.0))


async def test_chart_texts_are_in_the_replys_language_also_when_drawn_off_the_event_loop() -> None:
    """/compare's chart drawn as the handler draws it (a worker thread) under German: title, legend and alt German."""
    measured, _ = await two_answers_sharing_a_gpu()
    unmeasured = ChartSeries("small", Trace((), ((0.5, 1), (1.5, 9))), 0.5, 8.0)
    with speaking("de"):
        [picture] = await _picture("compare.png", compare_chart, [measured, unmeasured])
        usage_title = usage_chart([]).title
    assert picture.alt.startswith("keine Energiequelle für small: Tokens im Zeitverlauf. ")
    assert "small, erstes Token 0.50 s, 8.0 Tokens/s" in picture.alt
    assert usage_title == "Keine Antworten in diesem Zeitraum"
    assert compare_chart([unmeasured]).title == "no energy source: tokens over time", "English again outside"


async def test_one_model_against_itself_keeps_both_lines() -> None:
    big, _ = await two_answers_sharing_a_gpu()
    chart = compare_chart([big, big])
    assert chart.lines["big"] == chart.lines["big (2)"] == ((0.0, 0.0), *big.trace.power)


ROWS = [
    UsageRow("2025-06-01", "qwen", 3, 1200, 450, 0.75, 3),
    UsageRow("2025-06-01", "smol", 1, 100, 20, None, 0),
    UsageRow("2025-06-02", "smol", 4, 900, 300, 0.125, 2),  # partly measured
    UsageRow("2025-06-04", "qwen", 2, 800, 200, 0.5, 2),
]


def test_usage_chart_draws_tokens_and_energy_per_model_and_day() -> None:
    chart = usage_chart(ROWS)

    assert_png(chart, 800, 600)  # two panels: tokens, energy
    day = {d: float(date2num(date.fromisoformat(d))) for d in ("2025-06-01", "2025-06-02", "2025-06-04")}
    assert chart.lines == {
        "qwen tokens": ((day["2025-06-01"], 1650.0), (day["2025-06-04"], 1000.0)),
        "qwen Wh": ((day["2025-06-01"], 0.75), (day["2025-06-04"], 0.5)),
        "smol tokens": ((day["2025-06-01"], 120.0), (day["2025-06-02"], 1200.0)),
        "smol Wh": ((day["2025-06-02"], 0.125),),  # the unmeasured day has no bar, not a zero one
    }
    assert chart.title == "Usage per day and model, 2025-06-01 to 2025-06-04 (UTC)"
    assert chart.alt == (
        f"{chart.title}: qwen 5 answer(s), 2650 tokens, {format_wh(1.25)}; "
        f"smol 5 answer(s), 1320 tokens, {format_wh(0.125)}"
    )


def test_usage_chart_without_energy_has_one_panel_and_no_energy_bars() -> None:
    rows = [UsageRow("2025-06-01", "smol", 2, 10, 5, None, 0), UsageRow("2025-06-03", "smol", 1, 7, 1, None, 0)]
    chart = usage_chart(rows)
    assert_png(chart, 800, 450)
    day = float(date2num(date(2025, 6, 1)))
    assert chart.lines == {"smol tokens": ((day, 15.0), (day + 2, 8.0))}
    assert chart.alt.endswith("smol 3 answer(s), 23 tokens, energy not measured")


def test_usage_chart_of_nothing_is_still_an_image() -> None:
    chart = usage_chart([])
    assert png_size(chart.png) == (800, 450)
    assert chart.lines == {} and chart.alt == chart.title == "No answers in this period"


async def test_charts_drawn_at_once_in_threads_are_the_same_as_one_at_a_time() -> None:
    series = await two_answers_sharing_a_gpu()
    alone = compare_chart(series).png
    together = await asyncio.gather(
        *(asyncio.to_thread(compare_chart, series) for _ in range(3)), asyncio.to_thread(usage_chart, ROWS)
    )
    assert [chart.png for chart in together[:3]] == [alone] * 3
    assert together[3].png == usage_chart(ROWS).png


def test_charts_work_offline_with_an_unwritable_home(tmp_path: Path) -> None:
    """matplotlib is imported only to draw, never opens a socket, and copes with a HOME it cannot write to."""
    blocker = tmp_path / "file"
    blocker.write_text("")  # a home under a file: no one, not even root, can create it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPL", "XDG_"))}
    env["HOME"] = str(blocker / "home")
    code = (
        "import socket, sys\n"
        "def offline(*args, **kwargs): raise OSError('network use')\n"
        "socket.socket.connect = socket.socket.connect_ex = offline\n"
        "socket.create_connection = socket.getaddrinfo = offline\n"
        "import bridge.commands.charts as charts\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib is imported at start-up'\n"
        "png = charts.usage_chart([charts.UsageRow('2025-06-01', 'm', 1, 5, 5, 0.5, 1)]).png\n"
        "assert png.startswith(b'\\x89PNG') and len(png) > 5000\n"
        "import matplotlib, os\n"
        "assert not matplotlib.get_cachedir().startswith(os.environ['HOME']), 'the home was writable after all'\n"
        "print('drawn')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "drawn"


async def test_a_reply_picture_must_be_a_png_and_a_chart_that_fails_is_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chart = usage_chart([UsageRow("2026-11-30", "main", 2, 100, 50, None, 0)])
    picture = ReplyImage.png("usage.png", chart.alt, chart.png)
    assert picture.data == chart.png and picture.size == (800, 450)
    with pytest.raises(ValueError, match="not a PNG"):
        ReplyImage.png("broken.png", "x", b"\x89PNG\r\n")  # cut off before its header

    def broken(rows: list[UsageRow]) -> Chart:
        raise RuntimeError("no fonts")

    assert await _picture("usage.png", broken, []) == []
    assert "drawing usage.png failed" in caplog.text
