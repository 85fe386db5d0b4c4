"""Who is who: the persons (bridge/state/persons.py keeps them) and the platform accounts that are theirs."""

from __future__ import annotations

from datetime import UTC, tzinfo
from zoneinfo import ZoneInfo

from bridge.config import PersonSettings
from bridge.intake.platforms import normalize_account


class PersonDirectory:
    """One process's view of the persons; `update` replaces it whole when they change (bridge/state/persons.py), and
    every reader of this object sees the change at once."""

    def __init__(self, persons: list[PersonSettings]) -> None:
        self.update(persons)

    def update(self, persons: list[PersonSettings]) -> None:
        self._by_account = {account: p.id for p in persons for account in p.accounts}
        self._names = {p.id: p.name or p.id for p in persons}
        self._languages = {p.id: p.language for p in persons if p.language}
        self._zones = {p.id: ZoneInfo(p.time_zone) for p in persons if p.time_zone}
        self.ids = [p.id for p in persons]

    def person_for(self, account: str) -> str | None:
        return self._by_account.get(normalize_account(account))

    def name(self, person: str) -> str:
        return self._names.get(person, person)

    def language(self, person: str | None) -> str | None:
        """The reply language the person's settings name, if any."""
        return self._languages.get(person) if person is not None else None

    def zone(self, person: str | None) -> tzinfo:
        """The time zone the person's settings name (PersonSettings.time_zone), else UTC."""
        return self._zones.get(person, UTC) if person is not None else UTC
