"""Platforms are plug-ins: found through entry points, each bringing its settings, endpoints and adapter."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from adapters.console import ConsoleSettings
from adapters.email.settings import EmailSettings
from adapters.telegram.settings import TelegramSettings
from bridge.config import ConfigError, load_settings
from bridge.intake.platforms import channels, enabled_platforms, normalize_account, platforms, section
from bridge.ops.privacy import endpoints


def test_the_installed_platforms_are_found_through_their_entry_points() -> None:
    assert set(channels()) == {"console", "email", "matrix", "telegram"}
    assert all(name == platform.name for name, platform in platforms().items())


def test_each_platform_brings_its_own_settings_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIDE_TELEGRAM__POLL_TIMEOUT_S", "7")
    monkeypatch.setenv("CONFIDE_CONSOLE__ACCOUNT", "anna")
    settings = load_settings(_env_file=None)
    assert section(settings, "telegram", TelegramSettings).poll_timeout_s == 7
    assert section(settings, "console", ConsoleSettings).account == "anna"
    with pytest.raises(TypeError, match="telegram"):
        section(settings, "telegram", EmailSettings)


def test_a_platform_setting_is_validated_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIDE_TELEGRAM__ENABLED", "true")
    with pytest.raises(ConfigError, match=r"CONFIDE_TELEGRAM: .*token is required"):
        load_settings(_env_file=None)


def test_accounts_name_an_installed_platform_and_compare_as_it_does() -> None:
    with pytest.raises(ConfigError, match=r"channel in .*telegram"):
        load_settings(_env_file=None, persons=[{"id": "a", "accounts": ["signal:+49"]}])
    assert normalize_account("email:Anna@Example.ORG") == "email:anna@example.org"
    assert normalize_account("matrix:@Anna:example.org") == "matrix:@Anna:example.org"
    settings = load_settings(_env_file=None, persons=[{"id": "a", "accounts": ["email:Anna@Example.ORG"]}])
    assert settings.persons[0].accounts == ["email:anna@example.org"]


def test_only_enabled_platforms_run_and_list_their_hosts() -> None:
    settings = load_settings(_env_file=None)
    assert enabled_platforms(settings) == [] and endpoints(settings) == []
    telegram = {"enabled": True, "token": "1:x", "api_base_url": "http://127.0.0.1:9/"}
    settings = load_settings(_env_file=None, telegram=telegram)
    assert [p.name for p in enabled_platforms(settings)] == ["telegram"]
    assert [(e.purpose, e.host, e.allowed) for e in endpoints(settings)] == [("telegram", "127.0.0.1", True)]


def test_every_section_is_a_settings_model() -> None:
    for platform in platforms().values():
        assert issubclass(platform.settings, BaseModel)
        platform.settings()  # every setting has a default that starts
