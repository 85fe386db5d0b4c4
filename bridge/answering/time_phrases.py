"""The time a question in another language points at: Italian, German, French, Spanish, Dutch, Portuguese, Romanian
and Polish.

`question_analysis.date_span` reads English only; a question asked in one of these languages gets the same kind of
`Span` here, with the same rules (a day reaches DAY_SLACK further on both sides, a day or month without a year is
the last one that has been, "since" runs until now, "before" a month or year names no span).

Relative phrases (today, yesterday, the day before, this or last week, month or year, "N days/weeks/months/years
ago") come from the tables below. Dates with a month name ("3 maggio", "el 3 de mayo de 2024", "w marcu") are found
here by the month name, with the day number before it and the year after it, and dateparser reads that month name
in whatever case it is in. Numeric dates ("31.12.2024") and years after a lead word ("nel 2023") are read here.
dateparser's own search was measured (1.5.0) and is not used to find them: it misses many relative phrases in a
sentence ("la semaine dernière", "hace dos semanas", "twee weken geleden", "l'anno scorso"), cuts dates apart ("no
dia 3 de maio" is only "maio", "vor zwei Wochen und am 3" one date), misses some ("am 3.5.2024", "im Jahr 2023",
"nell'agosto 2022") and reads everyday words as dates ("die", "się", "mar", Romanian "mai" = more).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dateparser.date import DateDataParser

from bridge.answering.spans import DAY_SLACK, Span, day_span, month_start


@dataclass(frozen=True)
class _Words:
    """One language's time words, as regular expressions (matched ignoring case, as whole words)."""

    days: tuple[tuple[str, int], ...]  # today, yesterday, ...: how many days back; a longer phrase first
    units: tuple[str, str, str, str]  # every form of day, week, month, year that the phrases below use
    this: str  # "this week": {unit} is a unit
    last: str  # "last week"
    ago: tuple[str, ...]  # "two weeks ago": {n} is a number (digits or a word), {unit} a unit
    numbers: tuple[str, ...]  # one to twelve, in every gender and case
    months: str  # the full month names, in every case
    since: str  # lead words before a date: from then until now
    before: str  # before or until: a month or year names no span (as in English, a day still does)
    during: str  # "in": what lets a bare year or an ambiguous month name be a date
    articles: str = ""  # what may stand between a lead word and the date ("seit dem 3. Mai")
    ambiguous: str = r"(?!)"  # month names that are everyday words: a date only with a digit or a lead word


_UNITS = ("day", "week", "month", "year")

_WORDS = {
    "it": _Words(
        days=(
            (r"l['’]\s*altro\s*ieri|altro\s*ieri|altrieri|avantieri|ieri\s+l['’]\s*altro", 2),
            ("oggi", 0),
            ("ieri", 1),
        ),
        units=(r"giorn[oi]", r"settiman[ae]", r"mes[ei]", r"ann[oi]"),
        this=r"quest[oa]\s+{unit}|quest['’]\s*{unit}",
        last=r"{unit}\s+(?:scors[oa]|passat[oa])|scors[oa]\s+{unit}",
        ago=(r"{n}\s+{unit}\s+fa",),
        numbers=(
            "un[oa]?",
            "due",
            "tre",
            "quattro",
            "cinque",
            "sei",
            "sette",
            "otto",
            "nove",
            "dieci",
            "undici",
            "dodici",
        ),
        months="gennaio|febbraio|marzo|aprile|maggio|giugno|luglio|agosto|settembre|ottobre|novembre|dicembre",
        since=r"da|dal|dall[oa]?|dalla|dopo|partire",
        before=r"prima|fino|entro",
        during=r"in|nel|nell[oa]?|a|ad|di|del|durante",
        articles=r"il|l|la|lo|di|del|dell[oa]?|della|a|al|all[oa]?|alla|da|dal|dall[oa]?|dalla",
    ),
    "de": _Words(
        days=(("vorgestern", 2), ("heute", 0), ("gestern", 1)),
        units=(r"tag(?:e[ns]?)?", r"wochen?", r"monat(?:e[ns]?|s)?", r"jahr(?:e[ns]?|s)?"),
        this=r"dies(?:e[mnrs]?)?\s+{unit}",
        last=r"(?:letzt|vorig|vergangen)e[mnrs]?\s+{unit}",
        ago=(r"vor\s+{n}\s+{unit}",),
        numbers=(
            "ein(?:e[mnrs]?)?",
            "zwei",
            "drei",
            "vier",
            "fünf",
            "sechs",
            "sieben",
            "acht",
            "neun",
            "zehn",
            "elf",
            "zwölf",
        ),
        months="januar|jänner|februar|märz|april|mai|juni|juli|august|september|oktober|november|dezember",
        since=r"seit|ab|nach",
        before=r"vor|bis",
        during=r"in|im|am|während",
        articles=r"de[mnrs]|zum|zur|am|im|anfang|ende",
    ),
    "fr": _Words(
        days=((r"avant[-\s]hier", 2), (r"aujourd['’]\s*hui", 0), ("hier", 1)),
        units=(r"jours?|journées?", r"semaines?", r"mois", r"ans?|années?"),
        this=r"(?:cette|cet|ce)\s+{unit}",
        last=r"{unit}\s+(?:derni[eè]re?|pass[ée]e?)",
        ago=(r"il\s+y\s+a\s+{n}\s+{unit}",),
        numbers=("une?", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix", "onze", "douze"),
        months="janvier|février|fevrier|mars|avril|mai|juin|juillet|août|aout|septembre|octobre|novembre|décembre"
        "|decembre",
        since=r"depuis|dès|après|apres|partir",
        before=r"avant|jusqu|jusque",
        during=r"en|dans|durant|pendant",
        articles=r"le|la|l|du|de|d|au|à|a|en|début|fin",
        ambiguous="mars",  # the planet
    ),
    "es": _Words(
        days=((r"anteayer|antier|antes\s+de\s+ayer", 2), ("hoy", 0), ("ayer", 1)),
        units=(r"d[ií]as?", r"semanas?", r"mes(?:es)?", r"años?"),
        this=r"est[ea]\s+{unit}",
        last=r"{unit}\s+pasad[oa]|pasad[oa]\s+{unit}",
        ago=(r"hace\s+{n}\s+{unit}",),
        numbers=("un[oa]?", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve", "diez", "once", "doce"),
        months="enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|setiembre|octubre|noviembre|diciembre",
        since=r"desde|después|despues|partir",
        before=r"antes|hasta",
        during=r"en|durante",
        articles=r"el|la|de|del",
    ),
    "nl": _Words(
        days=(("eergisteren", 2), ("vandaag", 0), ("gisteren", 1)),
        units=(r"dag(?:en)?", r"weken|week", r"maand(?:en)?", r"jaar|jaren"),
        this=r"(?:deze|dit)\s+{unit}",
        last=r"(?:vorige?|afgelopen|verleden)\s+{unit}",
        ago=(r"{n}\s+{unit}\s+geleden",),
        numbers=(
            "een|één|eén",
            "twee",
            "drie",
            "vier",
            "vijf",
            "zes",
            "zeven",
            "acht",
            "negen",
            "tien",
            "elf",
            "twaalf",
        ),
        months="januari|februari|maart|april|mei|juni|juli|augustus|september|oktober|november|december",
        since=r"sinds|vanaf|na",
        before=r"voor|vóór|tot",
        during=r"in|tijdens",
        articles=r"de|het",
    ),
    "pt": _Words(
        days=((r"anteontem|antes\s+de\s+ontem", 2), ("hoje", 0), ("ontem", 1)),
        units=(r"dias?", r"semanas?", r"m[eê]s(?:es)?", r"anos?"),
        this=r"(?:n?est[ea]|n?ess[ea])\s+{unit}",
        last=r"{unit}\s+passad[oa]|passad[oa]\s+{unit}",
        ago=(r"(?:h[áa]|faz)\s+{n}\s+{unit}", r"{n}\s+{unit}\s+atr[áa]s"),
        numbers=(
            "um|uma",
            "dois|duas",
            "tr[eê]s",
            "quatro",
            "cinco",
            "seis",
            "sete",
            "oito",
            "nove",
            "dez",
            "onze",
            "doze",
        ),
        months="janeiro|fevereiro|março|abril|maio|junho|julho|agosto|setembro|outubro|novembro|dezembro",
        since=r"desde|depois|após|apos|partir",
        before=r"antes|até|ate",
        during=r"em|no|na|durante",
        articles=r"o|a|de|do|da|ao|dia",
    ),
    "ro": _Words(
        days=((r"alalt[aă]ieri", 2), (r"ast[aă]zi|azi", 0), ("ieri", 1)),
        units=(r"zi|ziua|zile|zilele", r"s[aă]pt[aă]m[aâ]n(?:a|ă|i|ile)", r"lun(?:a|ă|i|ile)", r"an(?:ul|i|ii)?"),
        this=r"{unit}\s+(?:aceasta|acesta|asta|[aă]sta|curent[aă]?)|(?:aceast[aă]|acest)\s+{unit}",
        last=r"{unit}\s+trecut[aă]?",
        ago=(r"acum\s+{n}\s+(?:de\s+)?{unit}", r"{n}\s+(?:de\s+)?{unit}\s+[îi]n\s+urm[aă]"),
        numbers=(
            "una?|o",
            "doi|dou[aă]",
            "trei",
            "patru",
            "cinci",
            "[șşs]ase",
            "[șşs]apte",
            "opt",
            "nou[aă]",
            "zece",
            "unsprezece",
            "doisprezece|dou[aă]sprezece",
        ),
        months="ianuarie|februarie|martie|aprilie|mai|iunie|iulie|august|septembrie|octombrie|noiembrie|decembrie",
        since=r"de\s+la|după|dupa|începând|incepand",
        before=r"înainte|inainte|până|pana",
        during=r"în|in|din|pe",
        articles=r"de|la|pe|cu|în|in|din",
        ambiguous="mai",  # also "more", "still"
    ),
    "pl": _Words(
        days=(("przedwczoraj", 2), ("dzisiaj|dziś|dzis", 0), ("wczoraj", 1)),
        units=(r"dzie[nń]|dni(?:a)?", r"tydzie[nń]|tygodni[aue]?", r"miesi[aą]c[aue]?|miesi[eę]cy", r"rok[u]?|lat[a]?"),
        this=r"(?:tym|ten|bie[zż][aą]c\w*)\s+{unit}",
        last=r"(?:zesz[lł]\w*|ubieg[lł]\w*|poprzedni\w*)\s+{unit}",
        ago=(r"(?:{n}\s+)?{unit}\s+temu",),  # "tydzień temu": a week ago, without a number
        numbers=(
            "jeden|jedn[aąeo]",
            "dwa|dwie",
            "trzy",
            "cztery",
            "pi[eę][cć]",
            "sze[sś][cć]",
            "siedem",
            "osiem",
            "dziewi[eę][cć]",
            "dziesi[eę][cć]",
            "jedena[sś]cie",
            "dwana[sś]cie",
        ),
        # nominative, genitive and locative ("styczeń", "3 stycznia", "w styczniu")
        months="stycze[nń]|styczni[au]|luty|lutego|lutym|marzec|marc[au]|kwiecie[nń]|kwietni[au]|maj|maj[au]"
        "|czerwiec|czerwc[au]|lipiec|lipc[au]|sierpie[nń]|sierpni[au]|wrzesie[nń]|wrze[sś]ni[au]"
        "|pa[zź]dziernik[au]?|listopad|listopad(?:a|zie)|grudzie[nń]|grudni[au]",
        since=r"od|po",
        before=r"przed|do",
        during=r"w|we|podczas",
    ),
}


@dataclass(frozen=True)
class _Rules:
    language: str
    relative: tuple[tuple[re.Pattern[str], str, int | None], ...]  # (phrase, unit, how many back; None: in "n")
    numbers: tuple[re.Pattern[str], ...]
    month: re.Pattern[str]
    ambiguous: re.Pattern[str]
    year_word: re.Pattern[str]  # "im Jahr", "no ano de" before a year, at the end of the text before it
    leads: tuple[tuple[str, re.Pattern[str]], ...]  # ("since" | "before" | "in", a lead word ending the text)


def _whole(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", re.IGNORECASE)


def _compile(language: str, words: _Words) -> _Rules:
    number = r"(?P<n>\d{1,3}|" + "|".join(words.numbers) + ")"
    relative: list[tuple[re.Pattern[str], str, int | None]] = [(_whole(p), "day", back) for p, back in words.days]
    for unit, forms in zip(_UNITS, words.units, strict=True):
        relative += [(_whole(ago.format(n=number, unit=f"(?:{forms})")), unit, None) for ago in words.ago]
    for unit, forms in zip(_UNITS[1:], words.units[1:], strict=True):
        relative += [(_whole(words.this.format(unit=f"(?:{forms})")), unit, 0)]
        relative += [(_whole(words.last.format(unit=f"(?:{forms})")), unit, 1)]
    article = rf"(?:\s+(?:{words.articles}))?" if words.articles else ""
    leads = tuple(
        (kind, re.compile(rf"(?<!\w)(?:{lead}){article}\s*$", re.IGNORECASE))
        for kind, lead in (("since", words.since), ("before", words.before), ("in", words.during))
    )
    return _Rules(
        language=language,
        relative=tuple(relative),
        numbers=tuple(re.compile(rf"(?:{n})", re.IGNORECASE) for n in words.numbers),
        month=_whole(words.months),
        ambiguous=_whole(words.ambiguous),
        year_word=re.compile(rf"(?<!\w)(?:{words.units[3]})(?:\s+de)?\s*$", re.IGNORECASE),
        leads=leads,
    )


_RULES = {language: _compile(language, words) for language, words in _WORDS.items()}
# Day-first numeric dates ("31.12.2024", "31/12/2024") and ISO dates: read here, because dateparser's search misses
# some in a sentence ("am 3.5.2024", "w dniu 31.12.2023"). Only with a four-digit year: "1.2.10" may be a version.
_NUMERIC_DATES = (
    re.compile(
        r"(?<![\w.,:/-])(?P<day>\d{1,2})(?P<sep>[./-])(?P<month>\d{1,2})(?P=sep)(?P<year>\d{4})(?![\w/-]|[.,]\d)"
    ),
    re.compile(r"(?<![\w.,:/-])(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})(?![\w-])"),
)
# The day before a month name ("3 maggio", "3. Mai", "3 de mayo") and the year after it ("maggio 2024", "mayo de
# 2024", "marzo del 2023").
_DAY_BEFORE = re.compile(r"(?<![\w.,:/-])(?P<day>\d{1,2})\.?\s+(?:(?:de|di)\s+)?$", re.IGNORECASE)
_YEAR_AFTER = re.compile(r",?\s+(?:(?:de|del|din)\s+)?(?P<year>(?:19|20)\d{2})(?![\w/-]|[.,]\d)", re.IGNORECASE)
_YEAR = re.compile(r"(?<![\w.,:/-])(?:19|20)\d{2}(?![\w/-]|[.,]\d)")
# What dateparser does not read: an ordinal day ("le 1er mai" is only "mai" to it) and an elided article
# ("nell'agosto 2022" is only "2022"). Replaced by spaces, so that offsets hold.
_UNREAD = re.compile(r"(?<=\d)(?:er|re|º|ª|°)(?!\w)|['’]", re.IGNORECASE)


def span_in(question: str, language: str, now: datetime) -> Span | None:
    """The time a question in `language` (ISO 639-1) points at, or None."""
    rules = _RULES.get(language)
    if rules is None:
        return None  # English stays with question_analysis's own rules
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    spans: list[Span] = []
    text = question
    # Each step masks what it took, so that no later step reads it again ("vor zwei Wochen" is no "vor" date).
    for step in (_relative, _numeric, _named, _years):
        found, text = step(text, rules, now)
        spans += found
        text = _UNREAD.sub(lambda match: " " * len(match[0]), text)
    if not spans:
        return None
    return Span(min(span.start for span in spans), max(span.end for span in spans))


def relative_phrases(text: str, language: str) -> list[tuple[int, int, str, int]]:
    """The relative phrases of `language` in `text` (bridge/answering/dated.py): start, end, unit ("day", "week",
    "month", "year") and how many of them back; none overlapping, the longer phrase taken first."""
    rules = _RULES.get(language)
    found: list[tuple[int, int, str, int]] = []
    if rules is None:
        return found
    for pattern, unit, back in rules.relative:
        for match in pattern.finditer(text):
            if not any(start < match.end() and match.start() < end for start, end, _, _ in found):
                found.append((match.start(), match.end(), unit, _count(match, rules) if back is None else back))
    return found


def _masked(text: str, match: re.Match[str]) -> str:
    return text[: match.start()] + " " * len(match[0]) + text[match.end() :]  # same length: offsets hold


def _relative(text: str, rules: _Rules, now: datetime) -> tuple[list[Span], str]:
    spans: list[Span] = []
    for pattern, unit, back in rules.relative:  # "l'altro ieri" before "ieri"
        for match in pattern.finditer(text):
            spans.append(_ago(unit, _count(match, rules) if back is None else back, now))
            text = _masked(text, match)
    return spans, text


def _count(match: re.Match[str], rules: _Rules) -> int:
    text = match["n"]
    if text is None:
        return 1  # Polish "tydzień temu"
    if text.isdigit():
        return int(text)
    return next(value for value, number in enumerate(rules.numbers, start=1) if number.fullmatch(text))


def unit_start(unit: str, back: int, now: datetime) -> datetime:
    """Where the day, week (from Monday), month or year `back` of them before now's begins (negative: ahead)."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return today - timedelta(days=back)
    if unit == "week":
        return today - timedelta(days=today.weekday() + 7 * back)
    if unit == "month":
        index = today.year * 12 + today.month - 1 - back
        return month_start(index // 12, index % 12 + 1)
    return datetime(today.year - back, 1, 1, tzinfo=UTC)


def _ago(unit: str, back: int, now: datetime) -> Span:
    """The day, week (Monday to Monday), month or year `back` of them before now's; this one (back 0) until now."""
    tomorrow = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    start = unit_start(unit, back, now)
    if unit == "day":
        start, end = start - DAY_SLACK, start + timedelta(days=1) + DAY_SLACK
    elif unit == "week":
        end = start + timedelta(days=7)
    elif unit == "month":
        end = month_start(start.year + start.month // 12, start.month % 12 + 1)
    else:
        end = datetime(start.year + 1, 1, 1, tzinfo=UTC)
    return Span(start, min(end, tomorrow))


def _numeric(text: str, rules: _Rules, now: datetime) -> tuple[list[Span], str]:
    spans: list[Span] = []
    for pattern in _NUMERIC_DATES:
        for match in pattern.finditer(text):
            if span := day_span(
                int(match["day"]), int(match["month"]), int(match["year"]), now
            ):  # None for "31.02.2024"
                spans.append(span)
            text = _masked(text, match)
    return spans, text


def _named(text: str, rules: _Rules, now: datetime) -> tuple[list[Span], str]:
    """Dates with a month name: "3 maggio", "3. Mai 2024", "el 3 de mayo de 2024", "marzo del 2023", "w marcu"."""
    spans: list[Span] = []
    for month in rules.month.finditer(text):
        day = _DAY_BEFORE.search(text, 0, month.start())
        year = _YEAR_AFTER.match(text, month.end())
        start = day.start() if day else month.start()
        lead = _lead(text[:start], rules)
        if rules.ambiguous.fullmatch(month[0]) and not (day or year or lead):
            continue  # Romanian "Ce mai faci?", French "la planète Mars"
        # Only day, month name and year, which dateparser reads in every language ("marzo del 2023" it does not).
        parts = [day and day["day"], month[0], year and year["year"]]
        date = _parser(rules.language, now).get_date_data(" ".join(part for part in parts if part)).date_obj
        end = year.end() if year else month.end()
        text = text[:start] + " " * (end - start) + text[end:]
        if span := _named_span(date, bool(day), int(year["year"]) if year else None, lead, now):
            spans.append(span)
    return spans, text


def _named_span(date: datetime | None, has_day: bool, year: int | None, lead: str | None, now: datetime) -> Span | None:
    if date is None:
        return None  # "31 febbraio": no such day, and no hint from it
    if has_day:
        return day_span(date.day, date.month, year, now)  # a day, before or since, is that day (as in English)
    if lead == "before":
        return None
    start = month_start(year or now.year, date.month)
    if year is None and start > now:  # "a dicembre" asked in June means last year's
        start = start.replace(year=start.year - 1)
    span = Span(start, month_start(start.year + start.month // 12, start.month % 12 + 1))
    return Span(span.start, max(span.end, now + DAY_SLACK)) if lead == "since" else span


def _years(text: str, rules: _Rules, now: datetime) -> tuple[list[Span], str]:
    """A bare year after a lead word ("nel 2023", "seit 2020", "im Jahr 2023"); "the 2023 model" is none."""
    spans: list[Span] = []
    for match in _YEAR.finditer(text):
        year = int(match[0])
        lead = _lead(rules.year_word.sub("", text[: match.start()]), rules)
        if lead in ("in", "since") and year <= now.year + 1:
            span = Span(datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC))
            spans.append(Span(span.start, max(span.end, now + DAY_SLACK)) if lead == "since" else span)
    return spans, text


def _lead(head: str, rules: _Rules) -> str | None:
    """How the word(s) ending `head`, right before a date, lead it: "since", "before", "in" or None."""
    return next((kind for kind, pattern in rules.leads if pattern.search(head)), None)


def _parser(language: str, now: datetime) -> DateDataParser:
    # A day without a year is the last one that has been ("29 febbraio" too); making one takes ~10 µs.
    settings = {"RELATIVE_BASE": now.replace(tzinfo=None), "PREFER_DATES_FROM": "past", "DATE_ORDER": "DMY"}
    return DateDataParser(languages=[language], settings=settings | {"PREFER_DAY_OF_MONTH": "first"})
