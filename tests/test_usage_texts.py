"""/usage and /compare's lines of time and energy, and the usage chart's days, in the reply's language."""

from __future__ import annotations

from datetime import date

import pytest
from matplotlib.dates import date2num

from bridge.commands.charts import _day_label
from bridge.language.catalog import speaking
from bridge.state.usage import AnswerUsage, UsageRow, format_summary

ROWS = [
    UsageRow("2026-11-30", "local", 1, 0, 13, None, 0),
    UsageRow("2026-11-30", "qwen", 3, 900, 80, 0.5, 2),
]


def test_the_english_texts_are_as_they_were() -> None:
    usage = AnswerUsage("qwen", 50, 120, 0.25, 2.25, 0.012345, 250.0)
    assert usage.describe() == "first token 0.25 s · total 2.25 s · 120 tokens · 60.0 tokens/s · 0.0123 Wh · 250 W"
    unmeasured = AnswerUsage("local", 50, 0, None, 1.0, None, None)
    assert unmeasured.describe() == "first token – · total 1.00 s · 0 tokens · – tokens/s"
    assert format_summary(ROWS, 7).splitlines() == [
        "Your usage, last 7 day(s) (UTC days):",
        "2026-11-30 local: 1 answer(s), tokens in not reported, 13 out, energy not measured",
        "2026-11-30 qwen: 3 answer(s), 900 tokens in, 80 out, 0.5000 Wh (2 of 3 measured)",
        "Total: 4 answer(s), 993 tokens, 0.5000 Wh.",
        "Energy is the GPUs' energy shared among the answers running at once, by tokens: an attribution.",
    ]
    assert format_summary(ROWS[:1], 1).splitlines()[-2] == "Total: 1 answer(s), 13 tokens."
    assert format_summary([], 3) == "No answers in the last 3 day(s)."


def test_usage_is_said_in_the_replys_language() -> None:
    with speaking("it"):
        summary = format_summary(ROWS, 7)
        line = AnswerUsage("qwen", 50, 120, 0.25, 2.25, 0.012345, 250.0).describe()
        nothing = format_summary([], 7)
    assert summary.splitlines()[1:4] == [
        "2026-11-30 local — risposte: 1, token in ingresso: non comunicati, token in uscita: 13, energia non misurata",
        "2026-11-30 qwen — risposte: 3, token in ingresso: 900, token in uscita: 80, 0.5000 Wh (2 su 3 misurate)",
        "Totale — risposte: 4, token: 993, 0.5000 Wh.",
    ]
    assert line == "primo token 0.25 s · totale 2.25 s · 120 token · 60.0 token/s · 0.0123 Wh · 250 W"
    assert nothing == "Nessuna risposta negli ultimi 7 gg."
    with speaking("de"):
        assert format_summary(ROWS, 7).startswith("Deine Nutzung, letzte 7 Tag(e) (UTC-Tage):\n")


@pytest.mark.parametrize(
    ("language", "label"),
    [("en", "Nov 30"), ("it", "30 nov"), ("de", "30. Nov."), ("fr", "30 nov."), ("es", "30 nov"), ("nl", "30 nov")],
)
def test_the_usage_charts_days_are_named_in_the_replys_language(language: str, label: str) -> None:
    assert _day_label(language)(float(date2num(date(2026, 11, 30)))) == label
