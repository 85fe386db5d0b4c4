"""The state database (SQLite, one thread, ordered migrations per owner) and what lives in it besides the
queues: each chat's memory and the usage ledger.
"""
