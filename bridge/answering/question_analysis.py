"""What a question says besides its words: the people it names and the time it points at.

Measured on LoCoMo (benchmarks/locomo.py): a name in the question pulls the dense query towards messages that
greet or address that person ("Hey Caroline!") rather than towards what was said, so the names of the person's
known authors are left out of the dense query and authorship is weighed separately (`favour_named_authors`).
A date in the question ("what did Maria say on 7 July, 2023?", "in May", "yesterday") becomes a time span
whose messages are searched as well, beside the whole history: a hint, never a filter.
A name the question writes that the history's excerpts never mention ("what did Giulia buy?" over a history
without a Giulia) says the history cannot answer it, whatever the topic's likeness (`unknown_names`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import cache

from babel import Locale, UnknownLocaleError
from babel.dates import get_day_names, get_month_names

from bridge.answering.spans import DAY_SLACK, Span, day_span, month_start
from bridge.answering.time_phrases import span_in

# Parts of author names that are not names a question would use for them.
_NOT_NAMES = frozenset({"me", "you", "confide", "the", "and", "unknown"})
# Languages that capitalize, within a sentence, names and little else. German capitalizes every noun ("Wohnung").
_CAPITALIZED_NAMES = frozenset({"en", "it", "fr", "es", "nl", "pt", "ro", "pl"})
# Capitalized within a sentence without being someone the history must mention: polite pronouns, titles, family.
_NOT_ASKED_NAMES = frozenset(
    "lei loro voi vous usted ustedes uw dumneavoastră pan pani mr mrs ms dr prof sig mum mom dad mama mamma "
    "papa papà grandma grandpa granny nonna nonno ok okay god dio".split()
)
# A word starting a sentence is capitalized whatever it is.
_SENTENCE_OPENERS = frozenset('.!?¿¡:;"“„«(')

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


def names_asked(question: str, language: str | None) -> list[str]:
    """The names a question writes, lower-cased: words capitalized within a sentence ("Giulia", "Lyon"), next
    ones joined ("north carolina"), in a language where only names are (not German, nor a question whose language
    is unknown), without a possessive ("Caroline's" -> "caroline"). Months, weekdays and language names are not,
    nor mentions and links."""
    if language not in _CAPITALIZED_NAMES:
        return []
    text = re.sub(r"(?:https?://|www\.)\S+|[@/#]\w+", " ", question)
    names: list[str] = []
    joined_to = -1  # where the last name ended: a name right after it continues it
    for match in re.finditer(r"[^\W\d_]+(?:['’]s\b)?", text):
        word = re.sub(r"['’]s$", "", match[0])
        before = text[: match.start()].rstrip()
        if not before or before[-1] in _SENTENCE_OPENERS or not _written_as_name(word, language):
            continue
        if names and not text[joined_to : match.start()].strip():
            names[-1] += f" {word.lower()}"
        else:
            names.append(word.lower())
        joined_to = match.end()
    return list(dict.fromkeys(names))


def _written_as_name(word: str, language: str) -> bool:
    if len(word) < 3 or not word[0].isupper() or word.isupper():
        return False
    lowered = word.lower()
    calendar = _calendar_words(language)
    if lowered in calendar or (lowered.endswith("s") and lowered[:-1] in calendar):  # "on Fridays"
        return False
    return lowered not in _NOT_ASKED_NAMES


def unknown_names(names: list[str], known: Iterable[str]) -> list[str]:
    """The names a question writes (`names_asked`) that none of the `known` texts (excerpts, their authors)
    mentions, by any of a name's words ("LeBron" for "Lebron James"). A word counts as mentioned in another form
    too: "Bens" and "Ben", "Tobi" and "Tobias", "José" and "Jose", "Himalayan" and "Himalayas" (alike but for
    the last letter or what follows the shorter, of 4 letters at least). Places are names too, and are written
    otherwise in another language ("Lisbon", "Lissabon"): only texts in the question's language can tell."""
    words = {_folded(w) for text in known for w in re.findall(r"[^\W\d_]+", text.lower())}
    return [name for name in names if not any(_mentioned(_folded(part), words) for part in name.split())]


def _mentioned(word: str, words: set[str]) -> bool:
    if word in words or f"{word}s" in words or (word.endswith("s") and word[:-1] in words):  # "Bens Nummer"
        return True
    if len(word) < 4:
        return False
    return any(len(w) >= 4 and _common_prefix(w, word) >= max(4, min(len(w), len(word)) - 1) for w in words)


def _common_prefix(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _folded(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


@cache
def _calendar_words(language: str) -> frozenset[str]:
    """Months and weekdays, wide and abbreviated, in English and in `language`, and English language names
    ("Italian" is also the adjective): capitalized in English without naming anyone."""
    words: set[str] = set()
    for locale in dict.fromkeys(("en", language)):
        try:
            for width in ("wide", "abbreviated"):
                words.update(str(n).lower().rstrip(".") for n in get_month_names(width, locale=locale).values())
                words.update(str(n).lower().rstrip(".") for n in get_day_names(width, locale=locale).values())
        except UnknownLocaleError:
            continue
    words.update(name.lower() for name in Locale("en").languages.values())
    return frozenset(words)
