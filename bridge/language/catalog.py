"""Every fixed text Confide says, in the language of the person it says it to: gettext catalogs read with Babel.

A text is written once, in English, where it is used: `say("I found nothing in your history about “{terms}”.",
terms=...)`, or, kept as a constant, marked with `N_` and said later with `say(CONSTANT)`. Babel's extractor
finds both (tests/test_catalogs.py fails on any text some catalog lacks, or translates with other placeholders).
The catalogs are `locale/LANG/LC_MESSAGES/confide.po`, read at first use (no compile step to forget).

Which language: the one the reply is in is set once per handled message (`speaking`), as gettext-based web
frameworks activate a request's language; everything said while handling it follows, without a language argument
threaded through every function. The language is the question's own where it can be told, else the person's
setting, else the language they last wrote in here, else English.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "confide"
# The languages Confide replies in; a text's language outside them is answered in English.
REPLY_LANGUAGES = ("en", "it", "de", "fr", "es", "nl")
SOURCE_LANGUAGE = "en"

_speaking: ContextVar[str] = ContextVar("confide_reply_language", default=SOURCE_LANGUAGE)


def N_(text: str) -> str:
    """A text to translate where it is said (`say(CONSTANT)`), marked here so the extractor finds it."""
    return text


def say(text: str, /, **values: Any) -> str:
    """`text` in the reply's language, with `values` filled in ({name} placeholders)."""
    translated = catalog(_speaking.get()).get(text, text)
    return translated.format(**values) if values else translated


def current_language() -> str:
    return _speaking.get()


@contextmanager
def speaking(language: str | None) -> Iterator[str]:
    """Say everything within in `language` (a REPLY_LANGUAGES code; any other, or None: English)."""
    chosen = language if language in REPLY_LANGUAGES else SOURCE_LANGUAGE
    token = _speaking.set(chosen)
    try:
        yield chosen
    finally:
        _speaking.reset(token)


@cache
def catalog(language: str) -> dict[str, str]:
    """The language's translations, msgid -> msgstr; empty for English (the texts are English) or a missing file."""
    if language == SOURCE_LANGUAGE:
        return {}
    path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.exists():
        log.error("no catalog for %s at %s: its replies will be in English", language, path)
        return {}
    from babel.messages.pofile import read_po

    with path.open("rb") as handle:
        read = read_po(handle, locale=language, domain=DOMAIN)
    return {
        m.id: m.string
        for m in read
        if isinstance(m.id, str) and m.id and isinstance(m.string, str) and m.string and not m.fuzzy
    }


@cache
def language_name(code: str) -> str:
    """A language's name in English, for the model's instructions ("German")."""
    from babel import Locale

    return str(Locale.parse(code).get_display_name(SOURCE_LANGUAGE))
