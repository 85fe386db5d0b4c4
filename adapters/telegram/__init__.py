"""Telegram: the live bot adapter and the importer of Telegram Desktop exports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.telegram.sent import MIGRATIONS
from adapters.telegram.settings import TelegramSettings
from bridge.intake.platforms import Endpoint, Platform, configured, section

if TYPE_CHECKING:
    from adapters.telegram.bot import TelegramAdapter
    from bridge.config import Settings


def build_adapter(settings: Settings) -> TelegramAdapter:
    """The live bot adapter, as `confide serve` runs it (imported lazily: the export importer needs no PTB)."""
    from adapters.telegram.bot import TelegramAdapter
    from bridge.intake.persons import PersonDirectory

    own = section(settings, "telegram", TelegramSettings)
    people = PersonDirectory(settings.persons)
    return TelegramAdapter(own, settings.data_dir, people, proxy=settings.proxy_url, transcriber=settings.transcriber)


def _enabled(own: TelegramSettings) -> bool:
    return own.enabled


def _endpoints(own: TelegramSettings) -> list[Endpoint]:
    return [configured("telegram", own.api_base_url)]


PLATFORM = Platform(
    name="telegram",
    settings=TelegramSettings,
    build=build_adapter,
    enabled=_enabled,
    endpoints=_endpoints,
    migrations=MIGRATIONS,
)
