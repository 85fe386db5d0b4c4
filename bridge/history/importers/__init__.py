"""History importers: each reads one kind of export and yields `HistoryRecord`s (or `Problem`s) for ingestion.

`base` holds the vocabulary every importer shares (and the bounds, CONFIDE_IMPORTS__*), `registry` finds
importers through the `confide.importers` entry points (so the core never imports adapters/), `text` extracts
document text for files and mail attachments, `archive` inflates zip members within bounds; the generic format
(`files`) and WhatsApp's exports (a platform with no live adapter) live here, platform exports beside their live
adapters (the LoCoMo benchmark's data
is read by benchmarks/locomo_import.py, never offered to a person).
"""
