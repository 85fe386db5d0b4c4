"""Replies in the person's language (issue 22): every fixed text is in every catalog, with its placeholders."""

from __future__ import annotations

import re

import pytest

from bridge.language.catalog import REPLY_LANGUAGES, SOURCE_LANGUAGE, catalog, say, speaking
from scripts.update_catalogs import extracted

TRANSLATED = [language for language in REPLY_LANGUAGES if language != SOURCE_LANGUAGE]
TEXTS = sorted(str(m.id) for m in extracted() if m.id)


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", text))


def test_the_texts_are_found_where_they_are_said() -> None:
    """The extractor sees `say(...)` and `N_(...)` texts (a change of how they are marked must not empty this)."""
    assert "I found nothing in your history about “{terms}”." in TEXTS
    assert "Cancelled; nothing was deleted." in TEXTS and len(TEXTS) > 50


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_text_is_translated_with_the_same_placeholders(language: str) -> None:
    translations = catalog(language)
    missing = [text for text in TEXTS if not translations.get(text)]
    assert missing == [], f"{language}: not translated (run scripts/update_catalogs.py, then translate)"
    wrong = [text for text in TEXTS if placeholders(translations[text]) != placeholders(text)]
    assert wrong == [], f"{language}: placeholders differ"


@pytest.mark.parametrize("language", TRANSLATED)
def test_a_reply_is_said_in_the_language_chosen_for_it(language: str) -> None:
    english = say("I found nothing in your history about “{terms}”.", terms="Ersatzschlüssel")
    with speaking(language):
        said = say("I found nothing in your history about “{terms}”.", terms="Ersatzschlüssel")
    assert "Ersatzschlüssel" in said and said != english
    assert say("Cancelled; nothing was deleted.") == "Cancelled; nothing was deleted."  # English again outside


def test_a_language_confide_does_not_reply_in_falls_back_to_english() -> None:
    with speaking("pl") as chosen:
        assert chosen == SOURCE_LANGUAGE
        assert say("Cancelled; nothing was deleted.") == "Cancelled; nothing was deleted."
