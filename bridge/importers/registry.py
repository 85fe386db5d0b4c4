"""Finds importers through the `confide.importers` entry points: the core never imports adapters/.

A new importer touches only its own package and pyproject.toml's entry point table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from bridge.importers.base import Importer, WrongKind

GROUP = "confide.importers"
log = logging.getLogger(__name__)

# Opens the right importer for a file a person sent in chat; None when no importer knows it.
SourceFinder = Callable[[Path, str], Importer | None]


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {point.name: point for point in entry_points(group=GROUP)}


@cache
def _load(kind: str) -> type[Importer]:
    """The importer class of `kind`, imported on first use: importing one kind never loads the others."""
    points = _entry_points()
    if kind not in points:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(kinds())}")
    loaded: type[Importer] = points[kind].load()
    return loaded


def kinds() -> list[str]:
    """The names of every installed importer."""
    return sorted(_entry_points())


def importer_classes() -> dict[str, type[Importer]]:
    """Every installed importer class by kind (imports them all: for building the `confide import` commands)."""
    return {kind: _load(kind) for kind in kinds()}


def open_importer(kind: str, path: Path, person: str, **options: Any) -> Importer:
    """The importer of `kind` for `path`. Options left as None are not passed (e.g. WhatsApp's `date_order`)."""
    given = {name: value for name, value in options.items() if value is not None}
    return _load(kind)(Path(path), person, **given)


def detect_kind(path: Path) -> str | None:
    """The first kind whose sniff accepts `path`, by `detect_order` (specific formats first); None when none does."""
    for kind in sorted(kinds(), key=lambda k: (_load(k).detect_order, k)):
        try:
            open_importer(kind, Path(path), person="").check()
        except (WrongKind, OSError):
            continue
        except Exception:  # a sniff that fails on a broken file means "not this kind", not the end of the search
            log.exception("telling whether %s is a %s export failed", Path(path).name, kind)
            continue
        return kind
    return None


def find_source(path: Path, person: str) -> Importer | None:
    """The importer for a file a person sent in chat, whatever its kind; None when no importer knows it."""
    kind = detect_kind(path)
    return open_importer(kind, path, person) if kind else None
