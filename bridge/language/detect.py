"""Which language a text is in, among those Confide speaks: offline, in microseconds, and honest when unsure.

py3langid (a naive Bayes model over byte n-grams, a few MB, no network) is restricted to Confide's languages, so a
short Italian question is not called Catalan. A text too short or too mixed to tell gets None, and the caller
falls back to what it knows (the person's language, or English for terms).
"""

from __future__ import annotations

import re
import threading
from functools import cache, lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

# ISO 639-1 codes, English first: the languages of the people Confide is for.
LANGUAGES = ("en", "it", "de", "fr", "es", "nl", "pt", "ro", "pl")
# Below this normalised probability a guess is no answer: measured on one-line questions, a right guess scores
# above 0.8 where the sentence has a few words; "ok", "Danke", "/help" score under 0.4 (and often wrongly).
MIN_CONFIDENCE = 0.5
# Fewer words, or letters, say too little: "@confide_bot /model second" was told Italian with 0.6.
MIN_WORDS, MIN_LETTERS = 2, 8
# Not words of any language: mentions, commands, addresses, links.
_NOT_WORDS = re.compile(r"(?:^|\s)[@/#]\S*|[\w.+-]+@[\w.-]+|\w+://\S+")
_SYMBOLS = re.compile(r"[^\w\s'’-]+")
# A language shows in a text's first sentences; the rest (a 100 kB paste) would only cost time.
MAX_CHARS = 1000
_lock = threading.Lock()  # the identifier keeps per-call scratch state


@cache
def _identifier() -> LanguageIdentifier:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(LANGUAGES))
    # py3langid keeps the model of all 97 languages beside the restricted one, to restore it on request: never
    # here, and it holds 27 MB of every process that reads or imports (benchmarks/mbox_memory.py).
    if hasattr(identifier, "_full_model"):
        identifier._full_model = (identifier.nb_ptc, identifier.nb_pc, identifier.nb_classes)
    return identifier


def load() -> None:
    """Read the model now (0.6 s here), at start-up, so that no first message waits for it."""
    _identifier()


def language_of(text: str) -> str | None:
    """The language of `text` (an ISO 639-1 code from LANGUAGES), or None where it cannot be told."""
    return _language_of_start(text[:MAX_CHARS])


@lru_cache(maxsize=256)
def _language_of_start(text: str) -> str | None:
    """Remembered: one question is told by its search, its gate, its refusal's terms, its prompt and its reply."""
    text = _NOT_WORDS.sub(" ", text)
    text = _SYMBOLS.sub(" ", text)  # runs of "!!!" or emoji are in no language, and drown the letters' evidence
    if len(re.findall(r"\w{2,}", text)) < MIN_WORDS or sum(ch.isalpha() for ch in text) < MIN_LETTERS:
        return None
    with _lock:
        found, confidence = _identifier().classify(text)
    return str(found) if confidence >= MIN_CONFIDENCE else None
