"""The people a question names and the time it points at: table tests of pure functions."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from bridge.answering.question_analysis import (
    date_span,
    names_asked,
    names_in,
    names_of,
    unknown_names,
    without_names,
)

NOW = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize(
    ("question", "start", "end"),
    [
        ("What did Maria plan on 7 July, 2023?", date(2023, 7, 6), date(2023, 7, 9)),
        ("What painting did she show on October 13, 2023?", date(2023, 10, 12), date(2023, 10, 15)),
        ("the weekend of 24June, 2022", date(2022, 6, 23), date(2022, 6, 26)),
        ("on the 3rd of March 2021", date(2021, 3, 2), date(2021, 3, 5)),
        ("on Dec 24th", date(2025, 12, 23), date(2025, 12, 26)),  # no year, the last one that has been
        ("on 3 May", date(2026, 5, 2), date(2026, 5, 5)),
        ("sent on 2024-02-29", date(2024, 2, 28), date(2024, 3, 2)),
        ("What class did she start in December 2023?", date(2023, 12, 1), date(2024, 1, 1)),
        ("what happened in May?", date(2026, 5, 1), date(2026, 6, 1)),
        ("what happened in December?", date(2025, 12, 1), date(2026, 1, 1)),
        ("How often did we go to the beach in 2023?", date(2023, 1, 1), date(2024, 1, 1)),
        ("between 1 May 2023 and 3 June 2023", date(2023, 4, 30), date(2023, 6, 5)),
        ("what did Anna say yesterday?", date(2026, 11, 25), date(2026, 11, 28)),
        ("anything new today", date(2026, 11, 26), date(2026, 11, 28)),
        ("the plan from last week", date(2026, 11, 16), date(2026, 11, 23)),
        ("this week's shopping list", date(2026, 11, 23), date(2026, 11, 28)),
        ("bills of last month", date(2026, 10, 1), date(2026, 11, 1)),
        ("trips this year", date(2026, 1, 1), date(2026, 11, 28)),
        ("trips last year", date(2025, 1, 1), date(2026, 1, 1)),
        ("What did Maria do the last weekend before April 10, 2023?", date(2023, 4, 9), date(2023, 4, 12)),
        ("what changed since 2020?", date(2020, 1, 1), date(2026, 11, 28)),  # from then until now
        ("anything since March?", date(2026, 3, 1), date(2026, 11, 28)),
        ("what happened on Feb 29?", date(2024, 2, 28), date(2024, 3, 2)),  # the last one there was
    ],
)
def test_dates_become_spans(question: str, start: date, end: date) -> None:
    span = date_span(question, NOW)
    assert span is not None
    assert (span.start.date(), span.end.date()) == (start, end)
    assert span.start.tzinfo is not None


@pytest.mark.parametrize(
    "question",
    [
        "Where did we have dinner?",
        "I may go to the market",  # "may" the verb
        "the 2023 model of the bike",  # a number, not a time asked about
        "on 31 February 2023",  # no such day
        "on 2023-13-01",
        "she has 2 mars bars",
        "python 3.10 may be slower?",  # numbers after a point, a colon or a currency sign are no days
        "the call at 14:30 March 3",
        "$5 may be too much",
        "I think 2 may be enough",  # "may" and "march" are words: a date only with a year or "on"/"in"
        "May 2 people share a room?",
        "we walked 2 march miles",
        "a budget of 2000 euros",  # a bare year needs "in", "since", ...
        "out of 2048 rows",
        "in 2048 we will see",  # years far ahead are no time anyone wrote about
        "in Jan's thread",
        "before 2020",  # names no span to search
    ],
)
def test_no_date_no_span(question: str) -> None:
    assert date_span(question, NOW) is None


def test_29_february_asked_early_in_a_leap_year_is_the_last_one_there_was() -> None:
    span = date_span("what happened on Feb 29?", datetime(2024, 1, 10, tzinfo=UTC))
    assert span is not None and span.start.date() == date(2020, 2, 28)


def test_january_new_year_relative_spans() -> None:
    january = datetime(2027, 1, 2, 9, 0, tzinfo=UTC)
    last_month = date_span("last month", january)
    assert last_month is not None and (last_month.start.date(), last_month.end.date()) == (
        date(2026, 12, 1),
        date(2027, 1, 1),
    )


@pytest.mark.parametrize(
    ("question", "authors", "names", "stripped"),
    [
        ("What did Caroline paint?", {"Caroline", "Melanie"}, {"caroline"}, "What did paint?"),
        ("What is Nate's favorite game?", {"Nate", "Joanna"}, {"nate"}, "What is favorite game?"),
        ("Did Anna Berg reply to Ben?", {"Anna Berg <a@b.org>", "Ben"}, {"anna", "berg", "ben"}, "Did reply to?"),
        ("What did Marco cook?", {"Anna"}, set(), "What did Marco cook?"),  # not an author: kept
        ("Caroline?", {"Caroline"}, {"caroline"}, "Caroline?"),  # nothing left: the question as it was
        ("what did the example say", {"Anna <anna@example.org>", "bob@example.org"}, set(), "what did the example say"),
        # Words that are also names stay words unless written as names.
        ("how much was the electricity bill?", {"Bill Murphy <b@x.org>"}, set(), "how much was the electricity bill?"),
        ("when is the boat club meeting?", {"The Boat Club"}, set(), "when is the boat club meeting?"),
        ("What did Bill say about the bill?", {"Bill Murphy <b@x.org>"}, {"bill"}, "What did say about the bill?"),
    ],
)
def test_known_authors_are_left_out_of_the_dense_query(
    question: str, authors: set[str], names: set[str], stripped: str
) -> None:
    assert names_in(question, names_of(authors)) == names
    assert without_names(question, names) == stripped


@pytest.mark.parametrize(
    ("question", "language", "names"),
    [
        ("What did Caroline's sister say about the Italian place in May?", "en", ["caroline"]),
        ("Has Tim been to North Carolina or to Tennessee on Fridays?", "en", ["tim", "north carolina", "tennessee"]),
        ("Where is the spare key?", "en", []),
        ("Giulia, where is the spare key?", "en", []),  # a sentence opens with a capital
        ("@confide_bot what did Marco say? Ask Lei", "en", ["marco"]),  # a mention, a sentence start, a pronoun
        ("Quale quartiere di Lione ha consigliato Pieter a Claire?", "it", ["lione", "pieter", "claire"]),
        ("Où joue le groupe d'Oliver samedi soir ?", "fr", ["oliver"]),
        ("¿Qué le ha regalado Tobias a Giulia para la casa nueva?", "es", ["tobias", "giulia"]),
        ("Wanneer moet Francesca haar proefschrift inleveren in Mei?", "nl", ["francesca"]),  # its own month names too
        ("Wo spielt Olivers Band am Samstagabend?", "de", []),  # German capitalizes every noun
        ("What did Marco say?", None, []),  # a language not told: capitals tell nothing
    ],
)
def test_the_names_a_question_writes(question: str, language: str | None, names: list[str]) -> None:
    assert names_asked(question, language) == names


@pytest.mark.parametrize(
    ("question", "known", "unknown"),
    [
        ("What did Tobi buy Giulia?", ["Tobias: here you go", "Giulia's flat"], []),
        ("What did Tobi buy Marco?", ["Tobias: here you go", "Giulia's flat"], ["marco"]),
        ("What's Ben's new number?", ["Bens neue Nummer ist 0171 5550123"], []),
        ("What does John like about Lebron James?", ["LeBron is the best", "John"], []),
        ("Where did Tim trek in the Himalayas?", ["Tim", "the Himalayan trek was hard"], []),
        ("When is José back?", ["Jose: next week"], []),
        ("What did Anne say?", ["Anna: see you"], ["anne"]),
        ("Has Tim been to North Carolina?", ["Tim: I loved Carolina"], []),
    ],
)
def test_a_name_counts_as_mentioned_in_another_form(question: str, known: list[str], unknown: list[str]) -> None:
    assert unknown_names(names_asked(question, "en"), known) == unknown
