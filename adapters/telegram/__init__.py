"""Telegram: the live bot adapter and the importer of Telegram Desktop exports."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.telegram.bot import TelegramAdapter
    from bridge.config import Settings


def build_adapter(settings: Settings) -> TelegramAdapter:
    """The live bot adapter, as `confide serve` runs it (imported lazily: the export importer needs no PTB)."""
    from adapters.telegram.bot import TelegramAdapter
    from bridge.persons import Directory

    return TelegramAdapter(settings.telegram, settings.data_dir, Directory(settings.persons))
