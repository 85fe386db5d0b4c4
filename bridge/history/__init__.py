"""A person's history: the index over its store (Qdrant, two backends), importers and the one import
service, ingestion with chat context windows, and BM25 terms.
"""
