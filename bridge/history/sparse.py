"""Sparse BM25 term vectors, in each text's own language. Qdrant applies the IDF part itself (sparse vectors with
Modifier.Idf), so documents carry only saturated term frequencies and queries a weight of 1 per term.

Terms are stemmed and stop words dropped with Qdrant's own tokenizer for the text's language: "Schlüssel" and
"Schlüssels" meet, "der" and "die" do not count. A record is tokenised in the language found at ingest, a question
in its own, so a mixed history (an Italian living in Munich) matches each language by its own rules. A text whose
language is unknown is read as English, as every record was before languages were told apart.

German and Dutch write compounds as one word: "tandarts" is a word of "Tandartsafspraak", "Schlüssel" of
"Ersatzschlüssel", and no stemmer splits them. In those languages every 4 letters of a word are a term as well, so a
compound meets its parts (benchmarks/multilingual.py: Dutch R@1 0.83 -> 0.85, German 0.91 -> 0.93). A record
indexed before pieces were has its words only, and is still found by them.
"""

from __future__ import annotations

import re
import threading

import qdrant_edge as qe

from bridge.history.store import SparseVector

# ISO 639-1 -> Qdrant's tokenizer language; None: no stemmer or stop words for it (Qdrant has none for Polish).
TOKENIZER_LANGUAGES: dict[str, str | None] = {
    "en": "english", "it": "italian", "de": "german", "fr": "french", "es": "spanish", "nl": "dutch",
    "pt": "portuguese", "ro": "romanian", "pl": None,
}  # fmt: skip
DEFAULT = "en"
# Languages whose compounds are one word, and how many letters a piece of a word has.
COMPOUNDING = frozenset({"de", "nl"})
PIECE = 4


class SparseEncoder:
    def __init__(self) -> None:
        self._models: dict[str, qe.Bm25] = {}
        self._lock = threading.Lock()  # documents are encoded in worker threads

    def document(self, text: str, language: str | None = None) -> SparseVector:
        vector = self._model(language).embed_document(text)
        if language in COMPOUNDING:
            vector = _joined(vector, self._pieces_model().embed_document(pieces(text)))
        return SparseVector(list(vector.indices), list(vector.values))

    def query(self, text: str, language: str | None = None) -> SparseVector:
        """Terms of a question, marked with its language (None: not told) for the store to match them with."""
        vector = self._model(language).embed_query(text)
        if language in COMPOUNDING:
            vector = _joined(vector, self._pieces_model().embed_query(pieces(text)))
        return SparseVector(list(vector.indices), list(vector.values), language)

    def _model(self, language: str | None) -> qe.Bm25:
        code = language if language in TOKENIZER_LANGUAGES else DEFAULT
        with self._lock:
            if (model := self._models.get(code)) is None:
                model = self._models[code] = qe.Bm25(qe.Bm25Config(language=TOKENIZER_LANGUAGES[code]))
            return model

    def _pieces_model(self) -> qe.Bm25:
        """Pieces are counted as they are: split at spaces, neither stemmed nor dropped as stop words."""
        with self._lock:
            if (model := self._models.get("pieces")) is None:
                config = qe.Bm25Config(
                    tokenizer=qe.TokenizerType.Whitespace, language=None, stemmer=qe.DisabledStemmer()
                )
                model = self._models["pieces"] = qe.Bm25(config)
            return model


def pieces(text: str) -> str:
    """Every PIECE letters of each longer word, marked so that no piece is taken for a word ("p:tand p:anda ...")."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    return " ".join(
        f"p:{word[i : i + PIECE]}" for word in words if len(word) > PIECE for i in range(len(word) - PIECE + 1)
    )


def _joined(words: qe.SparseVector, parts: qe.SparseVector) -> qe.SparseVector:
    weights = dict(zip(words.indices, words.values, strict=True))
    for index, value in zip(parts.indices, parts.values, strict=True):
        weights[index] = weights.get(index, 0.0) + value
    return qe.SparseVector(indices=list(weights), values=list(weights.values()))
