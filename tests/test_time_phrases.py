"""The time a question in Italian, German, French, Spanish, Dutch, Portuguese, Romanian or Polish points at: table
tests of `span_in`, every span worked out by hand from question_analysis's rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bridge.answering.question_analysis import date_span
from bridge.answering.time_phrases import span_in
from bridge.history.index import HistoryIndex
from bridge.messages import HistoryRecord

NOW = datetime(2024, 6, 12, 15, 0, tzinfo=UTC)  # a Wednesday; this week began on Monday 10 June
UNTIL_NOW = datetime(2024, 6, 13, 15, 0, tzinfo=UTC)  # NOW + DAY_SLACK: where "since ..." ends


def at(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


# What each kind of phrase spans, asked at NOW.
EXPECTED = {
    "yesterday": (at(2024, 6, 10), at(2024, 6, 13)),  # 11 June, a day's slack before, until the end of today
    "last week": (at(2024, 6, 3), at(2024, 6, 10)),  # Monday to Monday
    "last month": (at(2024, 5, 1), at(2024, 6, 1)),
    "last year": (at(2023, 1, 1), at(2024, 1, 1)),
    "two weeks ago": (at(2024, 5, 27), at(2024, 6, 3)),  # the week before last, Monday to Monday
    "in March": (at(2024, 3, 1), at(2024, 4, 1)),
    "31 Dec 2023": (at(2023, 12, 30), at(2024, 1, 2)),  # the day, with a day's slack on both sides
    "3 May": (at(2024, 5, 2), at(2024, 5, 5)),  # no year: the last 3 May there was
}

PHRASES = {
    "it": [
        ("yesterday", "Cosa ha detto Anna ieri?"),
        ("last week", "Cosa abbiamo mangiato la settimana scorsa?"),
        ("last month", "Quanto abbiamo speso il mese scorso?"),
        ("last year", "Dove siamo andati in vacanza l'anno scorso?"),
        ("two weeks ago", "Cosa è successo due settimane fa?"),
        ("in March", "Cosa abbiamo fatto a marzo?"),
        ("31 Dec 2023", "Chi ha chiamato il 31/12/2023?"),
        ("3 May", "Cosa abbiamo fatto il 3 maggio?"),
    ],
    "de": [
        ("yesterday", "Was hat Anna gestern gesagt?"),
        ("last week", "Was haben wir letzte Woche gegessen?"),
        ("last month", "Wie viel haben wir letzten Monat ausgegeben?"),
        ("last year", "Wo waren wir letztes Jahr im Urlaub?"),
        ("two weeks ago", "Was ist vor zwei Wochen passiert?"),
        ("in March", "Was haben wir im März gemacht?"),
        ("31 Dec 2023", "Wer hat am 31.12.2023 angerufen?"),
        ("3 May", "Was haben wir am 3. Mai gemacht?"),
    ],
    "fr": [
        ("yesterday", "Qu'a dit Anne hier ?"),
        ("last week", "Qu'avons-nous mangé la semaine dernière ?"),
        ("last month", "Combien avons-nous dépensé le mois dernier ?"),
        ("last year", "Où étions-nous en vacances l'année dernière ?"),
        ("two weeks ago", "Que s'est-il passé il y a deux semaines ?"),
        ("in March", "Qu'avons-nous fait en mars ?"),
        ("31 Dec 2023", "Qui a appelé le 31/12/2023 ?"),
        ("3 May", "Qu'avons-nous fait le 3 mai ?"),
    ],
    "es": [
        ("yesterday", "¿Qué dijo Ana ayer?"),
        ("last week", "¿Qué comimos la semana pasada?"),
        ("last month", "¿Cuánto gastamos el mes pasado?"),
        ("last year", "¿Dónde fuimos de vacaciones el año pasado?"),
        ("two weeks ago", "¿Qué pasó hace dos semanas?"),
        ("in March", "¿Qué hicimos en marzo?"),
        ("31 Dec 2023", "¿Quién llamó el 31/12/2023?"),
        ("3 May", "¿Qué hicimos el 3 de mayo?"),
    ],
    "nl": [
        ("yesterday", "Wat zei Anna gisteren?"),
        ("last week", "Wat aten we vorige week?"),
        ("last month", "Hoeveel gaven we vorige maand uit?"),
        ("last year", "Waar waren we vorig jaar op vakantie?"),
        ("two weeks ago", "Wat gebeurde er twee weken geleden?"),
        ("in March", "Wat deden we in maart?"),
        ("31 Dec 2023", "Wie belde er op 31-12-2023?"),
        ("3 May", "Wat deden we op 3 mei?"),
    ],
    "pt": [
        ("yesterday", "O que a Ana disse ontem?"),
        ("last week", "O que comemos na semana passada?"),
        ("last month", "Quanto gastamos no mês passado?"),
        ("last year", "Onde passamos as férias no ano passado?"),
        ("two weeks ago", "O que aconteceu há duas semanas?"),
        ("in March", "O que fizemos em março?"),
        ("31 Dec 2023", "Quem ligou em 31/12/2023?"),
        ("3 May", "O que fizemos no dia 3 de maio?"),
    ],
    "ro": [
        ("yesterday", "Ce a spus Ana ieri?"),
        ("last week", "Ce am mâncat săptămâna trecută?"),
        ("last month", "Cât am cheltuit luna trecută?"),
        ("last year", "Unde am fost în vacanță anul trecut?"),
        ("two weeks ago", "Ce s-a întâmplat acum două săptămâni?"),
        ("in March", "Ce am făcut în martie?"),
        ("31 Dec 2023", "Cine a sunat pe 31.12.2023?"),
        ("3 May", "Ce am făcut pe 3 mai?"),
    ],
    "pl": [
        ("yesterday", "Co Anna powiedziała wczoraj?"),
        ("last week", "Co jedliśmy w zeszłym tygodniu?"),
        ("last month", "Ile wydaliśmy w zeszłym miesiącu?"),
        ("last year", "Gdzie byliśmy na wakacjach w zeszłym roku?"),
        ("two weeks ago", "Co się stało dwa tygodnie temu?"),
        ("in March", "Co robiliśmy w marcu?"),
        ("31 Dec 2023", "Kto dzwonił 31.12.2023?"),
        ("3 May", "Co robiliśmy 3 maja?"),
    ],
}


@pytest.mark.parametrize(
    ("language", "kind", "question"),
    [(language, kind, question) for language, phrases in PHRASES.items() for kind, question in phrases],
)
def test_each_language_names_the_same_times(language: str, kind: str, question: str) -> None:
    span = span_in(question, language, NOW)
    assert span is not None
    assert (span.start, span.end) == EXPECTED[kind]


def test_every_language_is_covered_for_every_kind() -> None:
    assert set(PHRASES) == {"it", "de", "fr", "es", "nl", "pt", "ro", "pl"}
    for phrases in PHRASES.values():
        assert sorted(kind for kind, _ in phrases) == sorted(EXPECTED)


@pytest.mark.parametrize(
    ("language", "question", "start", "end"),
    [
        # the day before yesterday: 10 June with a day's slack on both sides
        ("it", "Cosa è successo l'altro ieri?", at(2024, 6, 9), at(2024, 6, 12)),
        ("de", "Was war vorgestern?", at(2024, 6, 9), at(2024, 6, 12)),
        ("fr", "Qu'est-ce qui s'est passé avant-hier ?", at(2024, 6, 9), at(2024, 6, 12)),
        ("es", "¿Qué pasó anteayer?", at(2024, 6, 9), at(2024, 6, 12)),
        ("nl", "Wat gebeurde er eergisteren?", at(2024, 6, 9), at(2024, 6, 12)),
        ("pt", "O que aconteceu anteontem?", at(2024, 6, 9), at(2024, 6, 12)),
        ("ro", "Ce s-a întâmplat alaltăieri?", at(2024, 6, 9), at(2024, 6, 12)),
        ("pl", "Co się stało przedwczoraj?", at(2024, 6, 9), at(2024, 6, 12)),
        # today, and this week, month or year: until the end of today
        ("fr", "Qu'a dit Anne aujourd'hui ?", at(2024, 6, 11), at(2024, 6, 13)),
        ("pl", "Co jest dziś?", at(2024, 6, 11), at(2024, 6, 13)),
        ("it", "Cosa abbiamo fatto questa settimana?", at(2024, 6, 10), at(2024, 6, 13)),
        ("es", "¿Qué compramos este mes?", at(2024, 6, 1), at(2024, 6, 13)),
        ("it", "Quanti viaggi quest'anno?", at(2024, 1, 1), at(2024, 6, 13)),
        ("ro", "Ce am făcut săptămâna aceasta?", at(2024, 6, 10), at(2024, 6, 13)),
        # other word orders and genders of "last"
        ("it", "Cosa è successo lo scorso anno?", at(2023, 1, 1), at(2024, 1, 1)),
        ("fr", "Qu'avons-nous fait l'an dernier ?", at(2023, 1, 1), at(2024, 1, 1)),
        ("de", "Was war vorige Woche?", at(2024, 6, 3), at(2024, 6, 10)),
        ("nl", "Wat gebeurde er afgelopen week?", at(2024, 6, 3), at(2024, 6, 10)),
        # N days, months, years ago, in words and in digits
        ("de", "Was war vor 3 Tagen?", at(2024, 6, 8), at(2024, 6, 11)),
        ("ro", "Ce a spus Ana acum trei zile?", at(2024, 6, 8), at(2024, 6, 11)),
        ("it", "Cosa è successo due mesi fa?", at(2024, 4, 1), at(2024, 5, 1)),
        ("es", "¿Qué pasó hace un mes?", at(2024, 5, 1), at(2024, 6, 1)),
        ("de", "Was war vor zwei Jahren?", at(2022, 1, 1), at(2023, 1, 1)),
        ("nl", "Wat gebeurde er drie weken geleden?", at(2024, 5, 20), at(2024, 5, 27)),
        ("pt", "O que compramos duas semanas atrás?", at(2024, 5, 27), at(2024, 6, 3)),
        ("pl", "Co było tydzień temu?", at(2024, 6, 3), at(2024, 6, 10)),  # "a week ago" without a number
        ("pl", "Co było pięć lat temu?", at(2019, 1, 1), at(2020, 1, 1)),
        # without a year, the last such day or month there was
        ("it", "Cosa è successo a dicembre?", at(2023, 12, 1), at(2024, 1, 1)),
        ("it", "Cosa è successo il 20 luglio?", at(2023, 7, 19), at(2023, 7, 22)),
        ("de", "Was war am 13. Juni?", at(2024, 6, 12), at(2024, 6, 15)),  # tomorrow, within a day's slack
        ("it", "Cosa è successo il 29 febbraio?", at(2024, 2, 28), at(2024, 3, 2)),
        # with a year, in the local order
        ("de", "Was war am 3. Mai 2023?", at(2023, 5, 2), at(2023, 5, 5)),
        ("es", "¿Qué hicimos el 3 de mayo de 2023?", at(2023, 5, 2), at(2023, 5, 5)),
        ("nl", "Wat deden we op 3 mei 2023?", at(2023, 5, 2), at(2023, 5, 5)),
        ("pl", "Co się stało 3 maja 2023 roku?", at(2023, 5, 2), at(2023, 5, 5)),
        ("it", "Che cosa ha detto Maria nel marzo 2023?", at(2023, 3, 1), at(2023, 4, 1)),
        ("it", "Cosa è successo a marzo del 2023?", at(2023, 3, 1), at(2023, 4, 1)),
        ("it", "Cosa è successo nell'agosto 2022?", at(2022, 8, 1), at(2022, 9, 1)),
        ("de", "Was war am 2024-02-29?", at(2024, 2, 28), at(2024, 3, 2)),
        ("fr", "Qu'a-t-on fait le 1er mai ?", at(2024, 4, 30), at(2024, 5, 3)),
        ("pt", "O que aconteceu no 1º de maio?", at(2024, 4, 30), at(2024, 5, 3)),
        # a year after a lead word
        ("it", "Cosa è successo nel 2023?", at(2023, 1, 1), at(2024, 1, 1)),
        ("de", "Was war im Jahr 2023?", at(2023, 1, 1), at(2024, 1, 1)),
        ("pt", "O que aconteceu no ano de 2022?", at(2022, 1, 1), at(2023, 1, 1)),
        ("pl", "Co się stało w 2023?", at(2023, 1, 1), at(2024, 1, 1)),
        # since: from then until now
        ("de", "Was hat sich seit März geändert?", at(2024, 3, 1), UNTIL_NOW),
        ("it", "Cosa è cambiato da marzo?", at(2024, 3, 1), UNTIL_NOW),
        ("fr", "Qu'est-ce qui a changé depuis mars ?", at(2024, 3, 1), UNTIL_NOW),
        ("es", "¿Qué ha cambiado desde marzo?", at(2024, 3, 1), UNTIL_NOW),
        ("nl", "Wat is er veranderd sinds maart?", at(2024, 3, 1), UNTIL_NOW),
        ("pl", "Co się zmieniło od marca?", at(2024, 3, 1), UNTIL_NOW),
        ("de", "Was hat sich seit 2020 geändert?", at(2020, 1, 1), UNTIL_NOW),
        # a day after "before" is still that day, as in English ("the weekend before 10 April")
        ("de", "Was war vor dem 3. Mai 2023?", at(2023, 5, 2), at(2023, 5, 5)),
        # an ambiguous month name with a lead word or a day
        ("ro", "Ce am făcut în mai?", at(2024, 5, 1), at(2024, 6, 1)),
        ("fr", "Qu'avons-nous fait le 3 mars ?", at(2024, 3, 2), at(2024, 3, 5)),
    ],
)
def test_phrases_become_spans(language: str, question: str, start: datetime, end: datetime) -> None:
    span = span_in(question, language, NOW)
    assert span is not None
    assert (span.start, span.end) == (start, end)


@pytest.mark.parametrize(
    ("language", "question"),
    [
        # everyday words some date parsers take for dates
        ("it", "Qual è la password del wifi della baita?"),
        ("it", "Qual è la vista sul mar?"),
        ("de", "Wo liegt der Ersatzschlüssel?"),
        ("de", "Was kostet die Miete?"),
        ("de", "Wie war das Wetter am Montag?"),
        ("fr", "Où est la clé ?"),
        ("fr", "Quelle est la distance de la Terre à Mars ?"),  # the planet
        ("es", "¿Dónde está la llave?"),
        ("nl", "Waar ligt de sleutel?"),
        ("pt", "Onde está a chave?"),
        ("ro", "Unde este cheia?"),
        ("ro", "Ce mai faci?"),  # "mai" is "more" here, not May
        ("pl", "Gdzie jest klucz?"),
        ("pl", "Gdzie się spotkaliśmy?"),  # "się" is no "sie(rpień)"
        # numbers that are no dates
        ("it", "Il modello 2023 della bici"),
        ("it", "Ho pagato 12.50 euro per la versione 1.2.10"),
        ("de", "Wann ist der Termin um 10:30?"),
        ("pl", "Ile kosztuje 5 kg jabłek?"),
        # no such day
        ("it", "Cosa ha detto Luca il 31 febbraio?"),
        ("de", "Was war am 31.02.2024?"),
        # before a month or a year: no span to search
        ("de", "Was war vor März?"),
        ("it", "Cosa è successo prima di marzo?"),
        ("fr", "Qu'est-ce qui s'est passé avant mars ?"),
        ("fr", "Qu'avons-nous fait jusqu'en mars ?"),
        ("es", "¿Qué pasó antes de marzo?"),
        ("nl", "Wat gebeurde er voor maart?"),
        ("pl", "Co było do marca?"),
        ("es", "¿Qué pasó antes de 2020?"),
    ],
)
def test_no_time_phrase_gives_none(language: str, question: str) -> None:
    assert span_in(question, language, NOW) is None


@pytest.mark.parametrize("language", ["en", "xx", ""])
def test_english_and_unknown_languages_are_left_to_the_english_rules(language: str) -> None:
    assert span_in("What did Anna say yesterday, ieri, gestern, hier, ayer?", language, NOW) is None


@pytest.mark.parametrize(
    ("language", "question", "start", "end"),
    [
        ("it", "Cosa è successo ieri e il 3 maggio?", at(2024, 5, 2), at(2024, 6, 13)),
        ("de", "Was war vor zwei Wochen und am 3. Mai?", at(2024, 5, 2), at(2024, 6, 3)),
        ("nl", "Wat zei Jan vorige week en op 3 mei?", at(2024, 5, 2), at(2024, 6, 10)),
        ("es", "¿Qué vimos en marzo y en abril?", at(2024, 3, 1), at(2024, 5, 1)),
    ],
)
def test_several_phrases_are_joined(language: str, question: str, start: datetime, end: datetime) -> None:
    span = span_in(question, language, NOW)
    assert span is not None
    assert (span.start, span.end) == (start, end)


def test_spans_are_in_utc_whatever_the_zone_of_now() -> None:
    naive = span_in("Cosa ha detto Anna ieri?", "it", NOW.replace(tzinfo=None))
    assert naive is not None
    assert (naive.start, naive.end) == EXPECTED["yesterday"]
    assert naive.start.utcoffset() == naive.end.utcoffset() == timedelta(0)
    # 01:00 on 12 June at UTC+3 is still 11 June in UTC: "yesterday" is 10 June there
    east = span_in("Cosa ha detto Anna ieri?", "it", datetime(2024, 6, 12, 1, 0, tzinfo=timezone(timedelta(hours=3))))
    assert east is not None
    assert (east.start, east.end) == (at(2024, 6, 9), at(2024, 6, 12))
    assert east.start.utcoffset() == timedelta(0)


async def test_a_question_in_german_searches_the_week_it_names(history: HistoryIndex) -> None:
    """The index reads a question's time phrase in the question's own language (language_of, then span_in)."""
    now = datetime(2024, 6, 12, 15, 0, tzinfo=UTC)
    notes = [("old", now - timedelta(days=40), "Der Schlüssel lag im Schuppen."),
             ("recent", now - timedelta(days=8), "Der Schlüssel liegt unter dem Blumentopf.")]  # fmt: skip
    await history.add("alice", [
        HistoryRecord(id=rid, person="alice", channel="files", conversation="notes", author="", time=when,
                      text=text, source="files:notes.txt")
        for rid, when, text in notes
    ])  # fmt: skip
    assert date_span("Wo lag der Schlüssel letzte Woche?", now, "de") is not None
    later = now + timedelta(days=400)  # "last week" then names neither note: the words alone decide
    hits = await history.search("alice", "Wo lag der Schlüssel letzte Woche?", limit=2, now=later)
    assert hits[0].record.id == "old"
    hits = await history.search("alice", "Wo lag der Schlüssel letzte Woche?", limit=2, now=now)
    assert hits[0].record.id == "recent"
