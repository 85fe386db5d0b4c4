"""Matrix: the live adapter (matrix-nio, E2EE) and the room backfill importer."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.matrix.client import MatrixAdapter
    from bridge.config import Settings


def build_adapter(settings: Settings) -> MatrixAdapter:
    from adapters.matrix.client import MatrixAdapter

    return MatrixAdapter(settings)
