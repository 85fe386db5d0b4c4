"""Relative time phrases in an excerpt, resolved against the excerpt's own date for the prompt.

"I joined a gym last week", written on 16 June 2023, is quoted to the model as "I joined a gym last week (the week
of 5 June 2023)": asked "when did Maria join a gym?", a small model otherwise answers "last week", which is true of
the message and false of today. English phrases are read here; the other languages Confide reads time phrases in
by time_phrases' own tables (yesterday, last week, N days ago, ...). The message itself is not changed, only the
prompt's quotation of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.answering.time_phrases import relative_phrases, unit_start

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "a couple of": 2, "couple of": 2, "a few": 3, "few": 3,
}  # fmt: skip
_COUNT = r"(?P<n>\d{1,2}|a couple of|couple of|a few|few|an|a|one|two|three|four|five|six|seven|eight|nine|ten)"


def _en(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", re.IGNORECASE)


# (phrase, unit, how many back; None: counted in the phrase; negative: ahead). The longer phrase first.
_ENGLISH: tuple[tuple[re.Pattern[str], str, int | None], ...] = (
    (_en(r"the day before yesterday"), "day", 2),
    (_en(r"yesterday|last night"), "day", 1),
    (_en(r"today|tonight|this (?:morning|afternoon|evening)"), "day", 0),
    (_en(r"tomorrow"), "day", -1),
    (_en(r"last weekend"), "weekend", 1),
    (_en(r"this weekend"), "weekend", 0),
    (_en(rf"{_COUNT} (?P<unit>day|week|month|year)s? ago"), "", None),
    (_en(r"last (?P<unit>week|month|year)"), "", 1),
    (_en(r"this (?P<unit>week|month|year)"), "", 0),
    (_en(r"next (?P<unit>week|month|year)"), "", -1),
    (_en(r"last (?P<weekday>" + "|".join(_WEEKDAYS) + ")"), "weekday", None),
)


@dataclass(frozen=True)
class _Found:
    start: int
    end: int
    when: str  # the phrase's date, as the prompt adds it


def dated(text: str, written: datetime, language: str | None) -> str:
    """`text` with each relative time phrase followed by the date it means, said `written`."""
    found = _english(text, written) if language is None or language == "en" else _other(text, written, language)
    for item in sorted(found, key=lambda f: f.start, reverse=True):
        text = f"{text[: item.end]} ({item.when}){text[item.end :]}"
    return text


def _english(text: str, written: datetime) -> list[_Found]:
    found: list[_Found] = []
    for pattern, unit, back in _ENGLISH:
        for match in pattern.finditer(text):
            if any(f.start < match.end() and match.start() < f.end for f in found):
                continue  # "the day before yesterday" is not also "yesterday"
            kind = unit or match["unit"].lower()
            if kind == "weekday":
                when = _last_weekday(written, _WEEKDAYS.index(match["weekday"].lower()))
            else:
                count = back if back is not None else _count(match["n"])
                when = _when(kind, count, written)
            found.append(_Found(match.start(), match.end(), when))
    return found


def _other(text: str, written: datetime, language: str) -> list[_Found]:
    phrases = relative_phrases(text, language)
    return [_Found(start, end, _when(unit, back, written)) for start, end, unit, back in phrases]


def _count(text: str) -> int:
    return int(text) if text.isdigit() else _NUMBERS[" ".join(text.lower().split())]


def _when(unit: str, back: int, written: datetime) -> str:
    if unit == "weekend":
        day = written.replace(hour=0, minute=0, second=0, microsecond=0)
        saturday = day - timedelta(days=(day.weekday() - 5) % 7 + 7 * (back if day.weekday() >= 5 else back - 1))
        return f"the weekend of {_day(saturday)}"
    start = unit_start(unit, back, written)
    if unit == "day":
        return _day(start)
    if unit == "week":
        return f"the week of {_day(start)}"
    return f"{start:%B %Y}" if unit == "month" else str(start.year)


def _last_weekday(written: datetime, weekday: int) -> str:
    back = (written.weekday() - weekday) % 7 or 7
    return _day(written - timedelta(days=back))


def _day(day: datetime) -> str:
    return f"{day.day} {day:%B %Y}"
