"""Languages beyond English (issue 22): which language a text is in, and BM25 terms by each text's own rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.history.index import HistoryIndex
from bridge.history.sparse import SparseEncoder
from bridge.language.detect import LANGUAGES, language_of
from bridge.messages import HistoryRecord

QUESTIONS = {
    "en": "Where is the spare key?",
    "it": "Qual è la password del wifi della baita?",
    "de": "Wo liegt der Ersatzschlüssel?",
    "fr": "Où est la clé de secours ?",
    "es": "¿Dónde está la llave de repuesto?",
    "nl": "Waar ligt de reservesleutel?",
    "pt": "Onde está a chave de reserva?",
    "pl": "Gdzie jest zapasowy klucz?",
}


@pytest.mark.parametrize("language", sorted(QUESTIONS))
def test_a_one_line_question_is_told_by_its_language(language: str) -> None:
    assert language in LANGUAGES
    assert language_of(QUESTIONS[language]) == language


@pytest.mark.parametrize("text", ["ok", "/help", "12:30", "👍", "Danke"])
def test_a_text_too_short_to_tell_has_no_language(text: str) -> None:
    assert language_of(text) is None


@pytest.mark.parametrize(
    ("language", "stored", "asked"),
    [("de", "Töpfe", "Topf"), ("it", "baite", "baita"), ("fr", "clés", "clé")],
)
def test_terms_meet_by_their_own_languages_stems(language: str, stored: str, asked: str) -> None:
    sparse = SparseEncoder()
    own = set(sparse.query(asked, language).indices) <= set(sparse.document(stored, language).indices)
    english = set(sparse.query(asked, "en").indices) <= set(sparse.document(stored, "en").indices)
    assert own and not english


@pytest.mark.parametrize(
    ("language", "stored", "asked"),
    [("nl", "Tandartsafspraak verzet naar donderdag", "tandarts"), ("de", "Der Ersatzschlüssel", "Schlüssel")],
)
def test_a_compound_meets_its_parts_in_languages_that_write_them_as_one_word(
    language: str, stored: str, asked: str
) -> None:
    sparse = SparseEncoder()
    assert set(sparse.query(asked, language).indices) & set(sparse.document(stored, language).indices)
    assert not set(sparse.query(asked, "en").indices) & set(sparse.document(stored, "en").indices)
    assert not set(sparse.query(asked, "it").indices) & set(sparse.document(stored, "it").indices)  # no compounds


def test_stop_words_are_each_languages_own() -> None:
    sparse = SparseEncoder()
    assert sparse.query("der die das und", "de").indices == []
    assert sparse.query("il la gli delle", "it").indices == []
    assert sparse.query("der die das und", "en").indices != []  # not English stop words
    unknown, english = sparse.query("der die das und"), sparse.query("der die das und", "en")
    assert (unknown.indices, unknown.values) == (english.indices, english.values)  # unknown: read as English
    assert (unknown.language, english.language) == (None, "en")  # and matched with every record's terms


async def test_each_record_is_indexed_in_its_language_and_found_in_a_mixed_history(history: HistoryIndex) -> None:
    notes = {
        "de": "Der Ersatzschlüssel liegt unter dem blauen Blumentopf.",
        "it": "La password del wifi della baita è pigna-1987.",
        "en": "The bins go out on Tuesdays.",
    }
    when = datetime(2024, 5, 1, tzinfo=UTC)
    records = [
        HistoryRecord(id=lang, person="alice", channel="files", conversation=f"{lang}.txt", author="", time=when,
                      text=text, source=f"files:{lang}.txt")
        for lang, text in notes.items()
    ]  # fmt: skip
    assert await history.add("alice", records) == 3
    stored = {r.id: r.language async for r in history.export("alice")}
    assert stored == {"de": "de", "it": "it", "en": "en"}
    for question, expected in (("Wo liegt der Ersatzschlüssel?", "de"), ("Qual è la password del wifi?", "it")):
        hits = await history.search("alice", question, limit=1)
        assert [h.record.id for h in hits] == [expected]


@pytest.mark.parametrize("text", ["@confide_bot /model second", "/forget all", "see https://example.org/x", "ok ok"])
def test_mentions_commands_and_links_are_no_language(text: str) -> None:
    assert language_of(text) is None


def test_a_huge_text_is_told_in_no_time() -> None:
    """Only its start is read: a 1 MB paste of one unbroken "word" is no quadratic regex's victim."""
    assert language_of("Wo liegt der Ersatzschlüssel? " + "!" * 1_000_000) == "de"
    assert language_of("a" * 1_000_000 + " x@y") is None


@pytest.mark.parametrize(("language", "own_language_twice"), [("de", True), ("it", True), ("nl", False), ("en", False)])
async def test_the_multilingual_half_ranks_a_questions_own_language_where_it_reads_it_well(
    history: HistoryIndex, language: str, own_language_twice: bool
) -> None:
    """Beside the pair's ranking, USE alone ranks the records in a non-English question's language, save Dutch,
    which it ranks poorly alone (benchmarks/multilingual.py); records in other languages it ranks alone always."""
    dense = await history.embedder.embed_query("Wo liegt der Ersatzschlüssel?")
    across, alike = history._multilingual_views(dense, language)
    assert across is not None and len(across) == len(dense)
    assert (alike is not None) is own_language_twice
