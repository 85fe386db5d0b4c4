"""Sparse BM25 term vectors. Qdrant applies the IDF part itself (sparse vectors with Modifier.Idf),
so documents carry only saturated term frequencies and queries a weight of 1 per term."""

from __future__ import annotations

import qdrant_edge as qe

from bridge.history.store import SparseVector


class SparseEncoder:
    def __init__(self, language: str = "english") -> None:
        self._bm25 = qe.Bm25(qe.Bm25Config(language=language))

    def document(self, text: str) -> SparseVector:
        vector = self._bm25.embed_document(text)
        return SparseVector(list(vector.indices), list(vector.values))

    def query(self, text: str) -> SparseVector:
        vector = self._bm25.embed_query(text)
        return SparseVector(list(vector.indices), list(vector.values))
