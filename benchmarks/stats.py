"""The one percentile the benchmarks print (nearest rank), so their p95s mean the same thing."""

from __future__ import annotations


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]
