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

from bridge.config import ImportSettings
from bridge.history.importers.base import Importer, WrongKind

GROUP = "confide.importers"
log = logging.getLogger(__name__)

# Opens the right importer for a file a person sent in chat, checked, reading with the given bounds; None when no
# importer knows it.
SourceFinder = Callable[[Path, str, ImportSettings | None], Importer | None]


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


def open_importer(kind: str, path: Path, person: str, limits: ImportSettings | None = None, **options: Any) -> Importer:
    """The importer of `kind` for `path`, reading within `limits` (the caller's `Settings.imports`; None: the
    defaults). Options left as None are not passed (e.g. WhatsApp's `date_order`)."""
    given = {name: value for name, value in options.items() if value is not None}
    return _load(kind)(Path(path), person, limits=limits, **given)


def find_source(path: Path, person: str, limits: ImportSettings | None = None) -> Importer | None:
    """The importer for a file whose kind is not named (one a person sent in chat): the first whose check accepts
    it, by `detect_order` (specific formats first), returned checked, so the import does not sniff it again; None
    when no importer knows it."""
    for kind in sorted(kinds(), key=lambda k: (_load(k).detect_order, k)):
        importer = open_importer(kind, Path(path), person, limits)
        try:
            importer.check()
        except (WrongKind, OSError):
            continue
        except Exception:  # a sniff that fails on a broken file means "not this kind", not the end of the search
            log.exception("telling whether %s is a %s export failed", Path(path).name, kind)
            continue
        return importer
    return None


def detect_kind(path: Path) -> str | None:
    """The kind of `path` as `find_source` tells it; None when no importer knows it."""
    found = find_source(path, person="")
    return found.kind if found is not None else None
