"""What a question says besides its words: the people it names and the time it points at.

Measured on LoCoMo (benchmarks/locomo.py): a name in the question pulls the dense query towards messages that
greet or address that person ("Hey Caroline!") rather than towards what was said, so the names of the person's
known authors are left out of the dense query and authorship is weighed separately (`favour_named_authors`).
A date in the question ("what did Maria say on 7 July, 2023?", "in May", "yesterday") becomes a time span
whose messages are searched as well, beside the whole history: a hint, never a filter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from bridge.answering.spans import DAY_SLACK, Span, day_span, month_start
from bridge.answering.time_phrases import span_in

# Parts of author names that are not names a question would use for them.
_NOT_NAMES = frozenset({"me", "you", "confide", "the", "and", "unknown"})

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
_MONTH = r"(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d{2})"
_LEAD = r"(?:(?P<lead>on|in|of|the|by|during|since|until|from|before|after)\s+)"
# Not a day when it follows a digit, a point, a colon or a currency sign: "3.10 may", "14:30 March", "$5 may".
_FREE = r"(?<![\d.:,$€£/-])"
_PATTERNS = [
    ("day", re.compile(rf"{_FREE}\b(?P<year>(?:19|20)\d{{2}})-(?P<month>\d{{2}})-(?P<day>\d{{2}})\b")),
    ("day", re.compile(rf"{_LEAD}?{_FREE}\b{_DAY}\s*(?:of\s+)?{_MONTH},?(?:\s+{_YEAR})?\b", re.IGNORECASE)),
    ("day", re.compile(rf"{_LEAD}?\b{_MONTH}\s+{_DAY}\b(?![:.]\d)(?:,?\s+{_YEAR})?", re.IGNORECASE)),
    ("month", re.compile(rf"{_LEAD}?\b{_MONTH},?\s+{_YEAR}\b", re.IGNORECASE)),
    ("month", re.compile(rf"{_LEAD}\b{_MONTH}(?P<year>)(?!\s*\d)(?!['’]s)\b", re.IGNORECASE)),
    ("year", re.compile(rf"{_LEAD}{_YEAR}\b", re.IGNORECASE)),
]
# Month names that are also everyday words: a date only with a year, or after "on", "in", ... ("on 3 May").
_AMBIGUOUS = frozenset({"may", "mar", "march"})
# "since May" means from then until now; "before 2020" names no span to search.
_OPEN_END = frozenset({"since", "from", "after"})
_NO_SPAN = frozenset({"before", "until", "by"})
_YEAR_LEADS = frozenset({"in", "during"}) | _OPEN_END | _NO_SPAN
_RELATIVE = re.compile(r"\b(today|yesterday|(?:this|last)\s+(?:week|month|year))\b", re.IGNORECASE)


def date_span(question: str, now: datetime, language: str | None = None) -> Span | None:
    """The time the question points at (all dates it names, joined), or None. Naive times are UTC. A question in
    another language than English is read by that language's rules too (bridge/answering/time_phrases.py)."""
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    spans: list[Span] = []
    if language and language != "en":
        if (other := span_in(question, language, now)) is not None:
            spans.append(other)
    taken: list[tuple[int, int]] = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(question):
            if any(start < match.end() and match.start() < end for start, end in taken):
                continue  # "7 July, 2023" is one day, not also the month "July, 2023"
            taken.append(match.span())  # also when it is no date ("31 February"): no hint from it then
            if span := _absolute(kind, match, now):
                spans.append(span)
    spans += [_relative(match[1].lower(), now) for match in _RELATIVE.finditer(question)]
    if not spans:
        return None
    return Span(min(span.start for span in spans), max(span.end for span in spans))


def _absolute(kind: str, match: re.Match[str], now: datetime) -> Span | None:
    year = int(match["year"]) if match["year"] else None
    lead = (match.groupdict().get("lead") or "").lower()
    month_text = (match.groupdict().get("month") or "").lower()
    if year is None and month_text in _AMBIGUOUS and not lead:
        return None  # "I think 2 may be enough", "May 2 people share a room?"
    if kind in ("year", "month") and lead in _NO_SPAN:
        return None
    if kind == "year":
        assert year is not None
        if lead not in _YEAR_LEADS or year > now.year + 1:  # "the 2023 model", "out of 2048 rows"
            return None
        span = Span(datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC))
    else:
        month = int(month_text) if month_text.isdigit() else _MONTHS[month_text]
        if kind == "day":
            return day_span(int(match["day"]), month, year, now)
        start = month_start(year or now.year, month)
        if year is None and start > now:  # "in May" asked in January means last year's
            start = start.replace(year=start.year - 1)
        span = Span(start, month_start(start.year + month // 12, month % 12 + 1))
    return Span(span.start, max(span.end, now + DAY_SLACK)) if lead in _OPEN_END else span


def _relative(phrase: str, now: datetime) -> Span:
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow = today + timedelta(days=1)
    if phrase == "today":
        return Span(today - DAY_SLACK, tomorrow)
    if phrase == "yesterday":
        return Span(today - timedelta(days=1) - DAY_SLACK, tomorrow)
    unit = phrase.split()[-1]
    last = phrase.startswith("last")
    if unit == "week":
        monday = today - timedelta(days=today.weekday())
        return Span(monday - timedelta(days=7), monday) if last else Span(monday, tomorrow)
    if unit == "month":
        first = month_start(today.year, today.month)
        previous = month_start(today.year - (today.month == 1), (today.month - 2) % 12 + 1)
        return Span(previous, first) if last else Span(first, tomorrow)
    first = datetime(today.year, 1, 1, tzinfo=UTC)
    return Span(first.replace(year=today.year - 1), first) if last else Span(first, tomorrow)


def name_parts(author: str) -> set[str]:
    """The words of an author's name a question may use for them ("Anna" for "Anna Berg <anna@x.org>")."""
    name = re.sub(r"<[^>]*>|\S+@\S+", " ", author.lower())  # an address is not a name
    return {p for p in re.findall(r"\w+", name) if len(p) >= 3 and p not in _NOT_NAMES}


def names_of(authors: Iterable[str]) -> set[str]:
    """Every name part of these authors, once (worked out when the author list is read, not per question)."""
    return {part for author in authors for part in name_parts(author)}


def names_in(question: str, names: set[str]) -> set[str]:
    """The known names the question uses, written as names: "Bill" is a person, "the electricity bill" is not."""
    capitalized = {word.lower() for word in re.findall(r"\w+", question) if word[:1].isupper()}
    return names & capitalized


def without_names(question: str, names: Iterable[str]) -> str:
    """The question with these names (and their possessive 's) left out where written as names; the question
    itself if nothing is left."""
    stripped = question
    for name in names:
        pattern = re.compile(rf"\b{re.escape(name)}(?:'s|’s)?\b", re.IGNORECASE)
        stripped = pattern.sub(lambda m: " " if m[0][:1].isupper() else m[0], stripped)  # "Bill", not "the bill"
    stripped = re.sub(r"\s+([?!.,])", r"\1", re.sub(r"\s+", " ", stripped)).strip()
    return stripped if re.search(r"\w", stripped) else question
