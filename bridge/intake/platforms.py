"""Platforms as plug-ins: each package in adapters/ declares one `Platform` under the entry point group
`confide.adapters`, and the core assembles what is installed.

A platform brings its settings section (`CONFIDE_<NAME>__*`), the hosts it contacts (listed by the privacy
check and `confide doctor`), how its account addresses compare, its adapter factory and, optionally, its own
tables in the state database and CLI commands. Adding a platform touches only its own package and
pyproject.toml; bridge/ never imports adapters/.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel

if TYPE_CHECKING:
    import typer

    from bridge.config import Settings
    from bridge.intake.adapter import Adapter
    from bridge.state.store import Migration

log = logging.getLogger(__name__)

GROUP = "confide.adapters"
SectionT = TypeVar("SectionT", bound=BaseModel)


@dataclass(frozen=True)
class Endpoint:
    """A host Confide contacts, and whether it may (judged by bridge.ops.privacy)."""

    purpose: str
    url: str
    host: str
    allowed: bool
    why: str


def configured(purpose: str, url: str) -> Endpoint:
    """A platform host the operator named: listed, allowed, not judged by its address."""
    return Endpoint(purpose, url, (urlsplit(url).hostname or "").lower(), True, "configured platform endpoint")


def _never(section: Any) -> bool:
    return False


def _no_endpoints(section: Any) -> list[Endpoint]:
    return []


def _same(address: str) -> str:
    return address


@dataclass(frozen=True)
class Platform:
    """What the core needs to know of one platform. `name` is its channel and its settings section."""

    name: str
    settings: type[BaseModel]
    # The live adapter, built from the whole settings (its own section is `section(settings, ...)`).
    build: Callable[[Settings], Adapter]
    # Whether `confide serve` runs it, judged from its own section.
    enabled: Callable[[Any], bool] = _never
    # The hosts it contacts where the operator configured them: listed, not judged by address.
    endpoints: Callable[[Any], list[Endpoint]] = _no_endpoints
    # Account addresses as they compare on this platform (mail addresses ignore case).
    normalize_address: Callable[[str], str] = _same
    # Its own tables in the state database (named `<name>_...`), as ordered migrations (bridge/state/db.py): the core
    # applies them at assembly and hands the adapter a `PlatformState` over them (bridge.intake.adapter.KeepsState).
    migrations: Sequence[Migration] = ()
    # Its own `confide import` commands, e.g. `confide import matrix --room` (given the `import` group).
    add_import_commands: Callable[[typer.Typer], None] | None = field(default=None)


@cache
def platforms() -> dict[str, Platform]:
    """The installed platforms, by name (entry points of `confide.adapters`)."""
    found: dict[str, Platform] = {}
    for point in entry_points(group=GROUP):
        platform = point.load()
        if not isinstance(platform, Platform) or platform.name != point.name:
            raise TypeError(f"entry point {point.name} = {point.value} is not a Platform named {point.name!r}")
        found[platform.name] = platform
    return found


def channels() -> tuple[str, ...]:
    return tuple(sorted(platforms()))


def normalize_account(account: str) -> str:
    """`channel:address` as the platform compares it; an unknown channel is left as it is."""
    channel, _, address = account.partition(":")
    platform = platforms().get(channel)
    return f"{channel}:{platform.normalize_address(address)}" if platform else account


def section(settings: Settings, name: str, kind: type[SectionT]) -> SectionT:
    """One platform's settings section, typed: `section(settings, "telegram", TelegramSettings)`."""
    value = getattr(settings, name, None)
    if not isinstance(value, kind):
        raise TypeError(f"settings have no {name!r} section of type {kind.__name__} (is the platform installed?)")
    return value


def enabled_platforms(settings: Settings) -> list[Platform]:
    return [p for p in platforms().values() if p.enabled(getattr(settings, p.name))]
