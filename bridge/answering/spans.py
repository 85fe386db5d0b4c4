"""Spans of time a question points at, shared by the English rules (question_analysis.py) and the other
languages' (time_phrases.py): a day, a month, with the slack a day's span gets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# A date names a day in some time zone and speaks of things "last night": a day's span reaches one day further.
DAY_SLACK = timedelta(days=1)


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime  # exclusive


def day_span(number: int, month: int, year: int | None, now: datetime) -> Span | None:
    """A day, as a span with DAY_SLACK on both sides; None where there is no such day."""
    # Without a year, the last such day that has been ("on 3 May" asked in January: last year's; "29 Feb": the
    # last leap year's).
    for candidate in [year] if year else range(now.year, now.year - 9, -1):
        try:
            day = datetime(candidate, month, number, tzinfo=UTC)
        except ValueError:  # "31 February", or 29 February of a common year
            continue
        if year or day <= now + DAY_SLACK:
            return Span(day - DAY_SLACK, day + timedelta(days=1) + DAY_SLACK)
    return None


def month_start(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)
