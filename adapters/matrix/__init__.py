"""Matrix: the live adapter (matrix-nio, E2EE) and the room backfill importer."""
