"""Settings from the environment, their error messages, and which hosts Confide may contact."""

from __future__ import annotations

import json
import os

import pytest

from bridge.config import ConfigError, load_settings
from bridge.ops.lockdown import OFFLINE_ENV
from bridge.ops.privacy import HostNotAllowed, check_endpoints, endpoints


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("CONFIDE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir("/")  # no stray .env
    return monkeypatch


def test_defaults_run_on_a_fresh_machine(env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.store.backend == "embedded" and settings.embedder.backend == "local"
    assert settings.models == {} and settings.local_model.enabled
    assert [p.id for p in settings.persons] == ["me"]
    assert endpoints(settings) == []


def test_nested_settings_from_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("CONFIDE_MODELS", json.dumps({"qwen": {"base_url": "http://127.0.0.1:8000/v1/", "model": "Qwen"}}))
    env.setenv("CONFIDE_MODELS__QWEN__CONCURRENCY", "16")
    env.setenv("CONFIDE_PERSONS", json.dumps([{"id": "ana", "accounts": ["email:Ana@Example.org", "telegram:42"]}]))
    env.setenv("CONFIDE_ALLOWED_HOSTS", "gpu.example.org, Qdrant.Example.org")
    env.setenv("CONFIDE_STORE__BACKEND", "server")
    env.setenv("CONFIDE_STORE__URL", "http://10.0.0.5:6333")
    settings = load_settings()
    assert settings.models["qwen"].concurrency == 16
    assert settings.models["qwen"].base_url == "http://127.0.0.1:8000/v1"
    assert settings.persons[0].accounts == ["email:ana@example.org", "telegram:42"]
    assert settings.allowed_hosts == ["gpu.example.org", "qdrant.example.org"]
    assert {e.purpose: e.why for e in check_endpoints(settings)} == {
        "model qwen": "loopback",
        "store": "private network",
    }


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CONFIDE_RECENT_TURNS", "-1", "CONFIDE_RECENT_TURNS: Input should be greater than or equal to 0"),
        ("CONFIDE_STORE__BACKEND", "postgres", "CONFIDE_STORE__BACKEND: Input should be 'embedded' or 'server'"),
        ("CONFIDE_PERSONS", '[{"id": "x", "accounts": ["fax:123"]}]', "must look like 'channel:address'"),
        ("CONFIDE_PERSONS", '[{"id": "a", "accounts": ["telegram:1"]}, {"id": "b", "accounts": ["telegram:1"]}]',
         "belongs to both 'a' and 'b'"),
        ("CONFIDE_MODELS", '{"m": {"base_url": "ftp://x", "model": "y"}}', "CONFIDE_MODELS__M__BASE_URL: must start"),
        ("CONFIDE_LOCAL_MODEL__ENABLED", "false", "no model configured"),
        ("CONFIDE_DEFAULT_MODEL", "nope", None),
    ],
)  # fmt: skip
def test_invalid_settings_name_the_variable(
    env: pytest.MonkeyPatch, variable: str, value: str, expected: str | None
) -> None:
    env.setenv(variable, value)
    if variable == "CONFIDE_DEFAULT_MODEL":
        env.setenv("CONFIDE_MODELS", '{"m": {"base_url": "http://127.0.0.1:1/v1", "model": "y"}}')
        expected = "default_model 'nope' is not one of models: ['m']"
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert expected in str(error.value)


@pytest.mark.parametrize(
    ("url", "allowed", "why"),
    [
        ("http://127.0.0.1:8000/v1", True, "loopback"),
        ("http://localhost:8000/v1", True, "loopback"),
        ("http://[::1]:8000/v1", True, "loopback"),
        ("http://192.168.1.20:8000/v1", True, "private network"),
        ("http://10.1.2.3/v1", True, "private network"),
        ("http://100.101.1.1/v1", True, "private network"),
        ("http://203.0.113.7/v1", False, "resolves to public address 203.0.113.7"),
        ("http://8.8.8.8/v1", False, "resolves to public address 8.8.8.8"),
        ("http://no-such-host.invalid/v1", False, "cannot be resolved"),
    ],
)
def test_hosts_outside_loopback_and_private_ranges_are_refused(
    env: pytest.MonkeyPatch, url: str, allowed: bool, why: str
) -> None:
    env.setenv("CONFIDE_MODELS", json.dumps({"m": {"base_url": url, "model": "x"}}))
    settings = load_settings()
    [endpoint] = endpoints(settings)
    assert endpoint.allowed is allowed and why in endpoint.why
    if not allowed:
        with pytest.raises(HostNotAllowed, match="CONFIDE_ALLOWED_HOSTS"):
            check_endpoints(settings)
        env.setenv("CONFIDE_ALLOWED_HOSTS", endpoint.host)
        assert check_endpoints(load_settings())[0].why == "named in CONFIDE_ALLOWED_HOSTS"


def test_telemetry_and_hub_access_are_off_once_the_core_is_imported() -> None:
    import bridge  # noqa: F401

    for key, value in OFFLINE_ENV.items():
        assert os.environ[key] == value


def test_env_example_lists_every_setting_and_loads_as_is(env: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from pydantic import BaseModel

    from bridge.config import settings_class

    Settings = settings_class()  # with every installed platform's section
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    (tmp_path / ".env").write_text(example)
    env.chdir(tmp_path)
    settings = load_settings()
    assert settings.local_model.gguf_path is None and settings.embedder.dimension is None

    def names(model: type[BaseModel], prefix: str) -> list[str]:
        found = []
        for field_name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found += names(annotation, f"{prefix}{field_name.upper()}__")
            else:
                found.append(f"{prefix}{field_name.upper()}")
        return found

    missing = [name for name in names(Settings, "CONFIDE_") if f"{name}=" not in example]
    assert missing == []
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    undocumented = [name for name in names(Settings, "CONFIDE_") if f"`{name}`" not in readme]
    assert undocumented == [], "the README's configuration table must list every setting"


@pytest.mark.parametrize("verify_dkim", ["true", "false"])
def test_dkim_lookups_are_listed_with_the_hosts_confide_contacts(env: pytest.MonkeyPatch, verify_dkim: str) -> None:
    """Verifying DKIM asks the system resolver for each sender domain's key: not a host of ours, so it is
    named among the endpoints (and by `confide doctor`) with the setting that stops it."""
    for key, value in {
        "IMAP_ENABLED": "true", "IMAP_HOST": "127.0.0.1", "IMAP_USER": "c@x.test", "IMAP_PASSWORD": "pw",
        "RELAY_HOST": "127.0.0.1", "FROM_ADDRESS": "c@x.test", "VERIFY_DKIM": verify_dkim,
    }.items():  # fmt: skip
        env.setenv(f"CONFIDE_EMAIL__{key}", value)
    listed = {e.purpose: e for e in endpoints(load_settings())}
    assert {"email imap", "email relay"} <= set(listed)
    if verify_dkim == "true":
        assert "_domainkey" in listed["email dkim"].url and "VERIFY_DKIM=false" in listed["email dkim"].why
    else:
        assert "email dkim" not in listed


def test_a_transcription_endpoint_is_judged_like_every_other(env: pytest.MonkeyPatch) -> None:
    env.setenv("CONFIDE_TRANSCRIBER__BACKEND", "openai")
    env.setenv("CONFIDE_TRANSCRIBER__BASE_URL", "https://api.example.com/v1")
    settings = load_settings()
    assert [(e.purpose, e.allowed) for e in endpoints(settings)] == [("transcriber", False)]
    with pytest.raises(HostNotAllowed):
        check_endpoints(settings)
    env.setenv("CONFIDE_TRANSCRIBER__BASE_URL", "http://10.0.0.7:8000/v1")
    assert [(e.purpose, e.allowed) for e in endpoints(load_settings())] == [("transcriber", True)]


def test_every_replica_of_a_model_is_judged_like_every_other_endpoint(env: pytest.MonkeyPatch) -> None:
    """A model served by several replicas: a public one among them is refused like a public base_url."""
    replicas = ["http://10.0.0.8:8000/v1/", "https://gpu.example.com/v1"]
    env.setenv("CONFIDE_MODELS", json.dumps({"qwen": {"base_url": "http://10.0.0.7:8000/v1", "model": "Qwen",
                                                      "replicas": replicas}}))  # fmt: skip
    settings = load_settings()
    assert settings.models["qwen"].base_urls == [
        "http://10.0.0.7:8000/v1", "http://10.0.0.8:8000/v1", "https://gpu.example.com/v1"
    ]  # fmt: skip
    assert [(e.url, e.allowed) for e in endpoints(settings)] == [
        ("http://10.0.0.7:8000/v1", True), ("http://10.0.0.8:8000/v1", True), ("https://gpu.example.com/v1", False)
    ]  # fmt: skip
    with pytest.raises(HostNotAllowed, match=r"gpu\.example\.com"):
        check_endpoints(settings)
    env.setenv("CONFIDE_MODELS__QWEN__REPLICAS", '["ftp://10.0.0.9/v1"]')
    with pytest.raises(ConfigError, match="must start with http"):
        load_settings()


def test_a_postgresql_state_is_judged_like_every_endpoint_and_its_password_never_shown(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("CONFIDE_STATE_URL", "postgresql://confide:s3cret@db.example.com:5432/confide")
    listed = endpoints(load_settings())
    assert [(e.purpose, e.url, e.allowed) for e in listed] == [
        ("state", "postgresql://db.example.com:5432/confide", False)
    ]
    with pytest.raises(HostNotAllowed) as refused:
        check_endpoints(load_settings())
    assert "s3cret" not in str(refused.value)
    env.setenv("CONFIDE_STATE_URL", "postgresql://confide:s3cret@10.0.0.4/confide")
    assert [(e.url, e.allowed) for e in endpoints(load_settings())] == [("postgresql://10.0.0.4/confide", True)]
    env.setenv("CONFIDE_STATE_URL", "host=10.0.0.4 dbname=confide")
    with pytest.raises(ConfigError, match=r"CONFIDE_STATE_URL: .*postgresql://"):
        load_settings()
