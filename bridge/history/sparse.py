"""Sparse BM25 term vectors, in each text's own language. Qdrant applies the IDF part itself (sparse vectors with
Modifier.Idf), so documents carry only saturated term frequencies and queries a weight of 1 per term.

Terms are stemmed and stop words dropped with Qdrant's own tokenizer for the text's language: "Schlüssel" and
"Schlüssels" meet, "der" and "die" do not count. A record is tokenised in the language found at ingest, a question
in its own, so a mixed history (an Italian living in Munich) matches each language by its own rules. A text whose
language is unknown is read as English, as every record was before languages were told apart.
"""

from __future__ import annotations

import threading

import qdrant_edge as qe

from bridge.history.store import SparseVector

# ISO 639-1 -> Qdrant's tokenizer language; None: no stemmer or stop words for it (Qdrant has none for Polish).
TOKENIZER_LANGUAGES: dict[str, str | None] = {
    "en": "english", "it": "italian", "de": "german", "fr": "french", "es": "spanish", "nl": "dutch",
    "pt": "portuguese", "ro": "romanian", "pl": None,
}  # fmt: skip
DEFAULT = "en"


class SparseEncoder:
    def __init__(self) -> None:
        self._models: dict[str, qe.Bm25] = {}
        self._lock = threading.Lock()  # documents are encoded in worker threads

    def document(self, text: str, language: str | None = None) -> SparseVector:
        vector = self._model(language).embed_document(text)
        return SparseVector(list(vector.indices), list(vector.values))

    def query(self, text: str, language: str | None = None) -> SparseVector:
        """Terms of a question, marked with its language (None: not told) for the store to match them with."""
        vector = self._model(language).embed_query(text)
        return SparseVector(list(vector.indices), list(vector.values), language)

    def _model(self, language: str | None) -> qe.Bm25:
        code = language if language in TOKENIZER_LANGUAGES else DEFAULT
        with self._lock:
            if (model := self._models.get(code)) is None:
                model = self._models[code] = qe.Bm25(qe.Bm25Config(language=TOKENIZER_LANGUAGES[code]))
            return model
