"""Checks of deploy/ that need no Docker engine, no GPU and no running systemd.

The Compose file is validated against the Compose Specification JSON schema (the copy that
check-jsonschema vendors), before and after variable interpolation as Compose would do it; the
systemd units are parsed, and verified by `systemd-analyze verify` where that exists; the
Dockerfile is read instruction by instruction. Confide's variables are checked against
bridge.config.Settings, so a renamed setting breaks these tests rather than a deployment.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from jsonschema import Draft202012Validator
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
SYSTEMD = DEPLOY / "systemd"
README = DEPLOY / "README.md"

# The one variable Compose must be given (`${QDRANT_API_KEY:?...}`); all others have defaults.
REQUIRED_VARIABLES = {"QDRANT_API_KEY"}
TEST_ENV = {"QDRANT_API_KEY": "test-qdrant-key"}
BACKENDS = ("vllm", "qdrant")
LOOPBACK = "127.0.0.1"


# --- Compose-style variable interpolation -------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|(?P<named>[_A-Za-z][_A-Za-z0-9]*)"
    r"|\{(?P<braced>[_A-Za-z][_A-Za-z0-9]*)(?:(?P<op>:?[-?+])(?P<arg>[^}$]*))?\}"
    r"|(?P<invalid>))"
)


class InterpolationError(ValueError):
    pass


def _substitute(text: str, env: Mapping[str, str], seen: list[tuple[str, str | None]]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None:
            raise InterpolationError(f"invalid interpolation at {match.start()} in {text!r}")
        name = match["named"] or match["braced"]
        op, arg = match["op"], match["arg"] or ""
        seen.append((name, op))
        value = env.get(name)
        if op is None:
            return value or ""
        unset_or_empty = not value if op.startswith(":") else value is None
        kind = op[-1]
        if kind == "-":
            return arg if unset_or_empty else value or ""
        if kind == "?":
            if unset_or_empty:
                raise InterpolationError(f"{name}: {arg}")
            return value or ""
        return "" if unset_or_empty else arg  # "+": the alternative when set

    return _INTERPOLATION.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str], seen: list[tuple[str, str | None]] | None = None) -> Any:
    """Compose interpolates every string value (not keys) of the file, as here."""
    seen = [] if seen is None else seen
    if isinstance(node, str):
        return _substitute(node, env, seen)
    if isinstance(node, list):
        return [interpolate(item, env, seen) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env, seen) for key, value in node.items()}
    return node


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $SET $$SET", env) == "x d  d x $SET"
    assert interpolate("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}", env) == "alt||alt"
    with pytest.raises(InterpolationError, match="needed"):
        interpolate("${UNSET:?needed}", env)
    with pytest.raises(InterpolationError, match="invalid"):
        interpolate("cost: 5$", env)


# --- Fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """The file as Compose sees it with only deploy/.env's required variable set."""
    resolved = interpolate(raw_compose, TEST_ENV)
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    try:
        from importlib.resources import files

        resource = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
        schema = json.loads(resource.read_text(encoding="utf-8"))
    except ModuleNotFoundError:  # pragma: no cover - a missing test dependency
        pytest.fail("the Compose Specification schema comes from check-jsonschema: pip install check-jsonschema")
    Draft202012Validator.check_schema(schema)
    return schema


@pytest.fixture(scope="module")
def settings_class() -> type[BaseModel]:
    if importlib.util.find_spec("bridge") is None:
        sys.path.insert(0, str(REPO))
    module = importlib.import_module("bridge.config")
    settings: type[BaseModel] = module.settings_class()  # with every installed platform's section
    return settings


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


# --- The Compose file ------------------------------------------------------------------------------


def _schema_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = Draft202012Validator(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}" for error in validator.iter_errors(document)
    ]


def test_compose_file_matches_the_compose_specification(
    compose_schema: dict[str, Any], raw_compose: dict[str, Any], compose: dict[str, Any]
) -> None:
    assert _schema_errors(compose_schema, raw_compose) == []
    assert _schema_errors(compose_schema, compose) == []


def test_schema_check_rejects_a_misspelt_key(compose_schema: dict[str, Any], compose: dict[str, Any]) -> None:
    """The schema is strict enough to catch typos, so the test above means something."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["vllm"]["helthcheck"] = broken["services"]["vllm"].pop("healthcheck")
    assert any("helthcheck" in error for error in _schema_errors(compose_schema, broken))


def test_only_the_qdrant_key_must_be_given(raw_compose: dict[str, Any]) -> None:
    seen: list[tuple[str, str | None]] = []
    interpolate(raw_compose, TEST_ENV, seen)
    without_default = {name for name, op in seen if op is None or op.endswith("?")}
    assert without_default == REQUIRED_VARIABLES
    with pytest.raises(InterpolationError, match="QDRANT_API_KEY"):
        interpolate(raw_compose, {})


def test_every_compose_variable_is_documented(raw_compose: dict[str, Any]) -> None:
    seen: list[tuple[str, str | None]] = []
    interpolate(raw_compose, TEST_ENV, seen)
    readme = README.read_text(encoding="utf-8")
    undocumented = sorted({name for name, _ in seen if f"`{name}`" not in readme})
    assert undocumented == [], "add these to the variable table in deploy/README.md"


def test_services(services: dict[str, dict[str, Any]]) -> None:
    assert {"vllm", "qdrant", "confide"} <= set(services)
    assert services["vllm"]["image"].startswith("vllm/vllm-openai:")
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:")
    assert services["confide"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE_FILE.parent / services["confide"]["build"]["context"]).resolve() == REPO


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        assert tag and tag != "latest", f"{name}: pin {image!r} to a version"


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable", False), name
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_vllm_healthcheck_asks_health_endpoint(services: dict[str, dict[str, Any]]) -> None:
    for name in ("vllm", "vllm-compare"):
        assert "http://127.0.0.1:8000/health" in " ".join(services[name]["healthcheck"]["test"]), name


def test_qdrant_healthcheck_asks_readiness(raw_compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    script = services["qdrant"]["healthcheck"]["test"][-1]
    assert "/readyz" in script and "6333" in script
    # `$$` in the file is a literal `$` for bash after interpolation.
    assert "$status" in script and "$$status" in raw_compose["services"]["qdrant"]["healthcheck"]["test"][-1]


def test_confide_waits_for_healthy_backends(services: dict[str, dict[str, Any]]) -> None:
    depends_on = services["confide"]["depends_on"]
    assert isinstance(depends_on, dict)
    for backend in BACKENDS:
        assert depends_on[backend]["condition"] == "service_healthy", backend
    assert services["confide"]["healthcheck"]["test"][1:] == ["confide", "health"]
    assert services["confide"]["environment"]["CONFIDE_METRICS__PORT"], "readiness is served beside the metrics"


def _published_host_ip(port: str | int | dict[str, Any]) -> str | None:
    """The host address a port is published on, or None for all addresses."""
    if isinstance(port, dict):
        return port.get("host_ip") if port.get("published") is not None else LOOPBACK
    spec = str(port).partition("/")[0]
    if spec.startswith("["):
        return spec[1 : spec.index("]")]
    parts = spec.split(":")
    return parts[0] if len(parts) == 3 else None


@pytest.mark.parametrize(
    ("port", "host_ip"),
    [("127.0.0.1:8000:8000", LOOPBACK), ("8000:8000", None), ("8000", None), ("0.0.0.0:1:1/udp", "0.0.0.0")],
)
def test_published_host_ip(port: str, host_ip: str | None) -> None:
    assert _published_host_ip(port) == host_ip


def test_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for backend in BACKENDS:
        assert services[backend].get("ports"), f"{backend} publishes no port"
    assert not services["confide"].get("ports"), "Confide serves nothing over the network"
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        for port in service.get("ports", []):
            assert _published_host_ip(port) == LOOPBACK, f"{name} publishes {port!r} beyond {LOOPBACK}"


def test_vllm_listens_inside_its_container(services: dict[str, dict[str, Any]]) -> None:
    for name in ("vllm", "vllm-compare"):
        service = services[name]
        assert service["entrypoint"] == ["vllm", "serve"]
        assert "--port=8000" in service["command"]
        assert any(str(p).endswith(":8000") for p in service["ports"])


def test_telemetry_is_off(services: dict[str, dict[str, Any]]) -> None:
    for name in ("vllm", "vllm-compare"):
        env = _environment(services[name])
        assert env["VLLM_NO_USAGE_STATS"] == "1", name
        assert env["DO_NOT_TRACK"] == "1", name
        assert env["HF_HUB_DISABLE_TELEMETRY"] == "1", name
        assert "HF_HUB_OFFLINE" in env, name
    assert _environment(services["qdrant"])["QDRANT__TELEMETRY_DISABLED"] == "true"
    confide = _environment(services["confide"])
    assert confide["DO_NOT_TRACK"] == "1"
    assert confide["HF_HUB_OFFLINE"] == "1"


def test_qdrant_requires_the_api_key_confide_sends(services: dict[str, dict[str, Any]]) -> None:
    qdrant = _environment(services["qdrant"])
    confide = _environment(services["confide"])
    assert qdrant["QDRANT__SERVICE__API_KEY"] == TEST_ENV["QDRANT_API_KEY"]
    assert confide["CONFIDE_STORE__API_KEY"] == TEST_ENV["QDRANT_API_KEY"]


def test_vllm_reserves_a_gpu(services: dict[str, dict[str, Any]]) -> None:
    for name in ("vllm", "vllm-compare"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), name


def test_second_model_only_with_compare_profile(services: dict[str, dict[str, Any]]) -> None:
    assert services["vllm-compare"]["profiles"] == ["compare"]
    for name in ("vllm", "qdrant", "confide"):
        assert "profiles" not in services[name], f"{name} must start without a profile"
    assert services["vllm"]["command"][0] == "Qwen/Qwen2.5-7B-Instruct"
    assert services["vllm-compare"]["command"][0] == "mistralai/Mistral-7B-Instruct-v0.3"


def test_state_lives_in_named_volumes(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    mounts = {
        name: [str(v).split(":")[0] if isinstance(v, str) else v["source"] for v in service.get("volumes", [])]
        for name, service in services.items()
    }
    for name, sources in mounts.items():
        for source in sources:
            assert source in declared, f"{name} mounts {source!r}, which is not a named volume"
    assert mounts["vllm"] == ["hf-cache"]
    assert mounts["qdrant"] == ["qdrant-storage"]
    assert mounts["confide"] == ["confide-data"]


def test_confide_env_file_is_optional(services: dict[str, dict[str, Any]]) -> None:
    assert services["confide"]["env_file"] == [{"path": "../.env", "required": False}]


# --- Confide's variables against bridge/config.py ---------------------------------------------------


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *get_args(annotation)] if get_origin(annotation) is not dict else []
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def setting_exists(settings: type[BaseModel], variable: str) -> bool:
    """Whether CONFIDE_A__B__C names a field of Settings, with dict fields taking any key."""
    if not variable.startswith("CONFIDE_"):
        return False
    parts = variable.removeprefix("CONFIDE_").lower().split("__")
    model: type[BaseModel] | None = settings
    index = 0
    while index < len(parts):
        if model is None or parts[index] not in model.model_fields:
            return False
        annotation = model.model_fields[parts[index]].annotation
        index += 1
        if get_origin(annotation) is dict and index < len(parts):
            annotation = get_args(annotation)[1]
            index += 1
        if index < len(parts):
            model = _unwrap_model(annotation)
    return True


def test_setting_exists_walks_nested_and_dict_fields(settings_class: type[BaseModel]) -> None:
    assert setting_exists(settings_class, "CONFIDE_MODELS")
    assert setting_exists(settings_class, "CONFIDE_MODELS__ANY__BASE_URL")
    assert setting_exists(settings_class, "CONFIDE_STORE__API_KEY")
    assert not setting_exists(settings_class, "CONFIDE_STORE__APIKEY")
    assert not setting_exists(settings_class, "CONFIDE_MODELS__ANY__BASEURL")
    assert not setting_exists(settings_class, "CONFIDE_DATA_DIR__X")
    assert not setting_exists(settings_class, "CONFIDE_NOPE")


def _confide_variables(env: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith("CONFIDE_")}


def _load_settings(settings: type[BaseModel], env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in list(os.environ):
        if key.startswith("CONFIDE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return settings(_env_file=None)  # type: ignore[call-arg]


def test_compose_confide_variables_are_settings(
    services: dict[str, dict[str, Any]], settings_class: type[BaseModel]
) -> None:
    variables = _confide_variables(_environment(services["confide"]))
    assert variables
    unknown = sorted(name for name in variables if not setting_exists(settings_class, name))
    assert unknown == []


def test_compose_confide_settings_load(
    services: dict[str, dict[str, Any]], settings_class: type[BaseModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _load_settings(settings_class, _confide_variables(_environment(services["confide"])), monkeypatch)
    main = settings.models["main"]
    assert main.base_url == "http://vllm:8000/v1"
    assert main.model == services["vllm"]["command"][0], "Confide must ask for the model vLLM serves"
    assert settings.default_model == "main"
    assert settings.local_model.enabled is False
    assert settings.store.backend == "server"
    assert settings.store.url == "http://qdrant:6333"
    assert settings.store.api_key.get_secret_value() == TEST_ENV["QDRANT_API_KEY"]
    assert str(settings.data_dir) == "/data"
    assert {"vllm", "vllm-compare", "qdrant"} <= set(settings.allowed_hosts)


def test_compose_model_follows_vllm_model_variable(raw_compose: dict[str, Any]) -> None:
    env = {**TEST_ENV, "VLLM_MODEL": "Qwen/Qwen2.5-3B-Instruct"}
    services = interpolate(raw_compose, env)["services"]
    assert services["vllm"]["command"][0] == "Qwen/Qwen2.5-3B-Instruct"
    assert _environment(services["confide"])["CONFIDE_MODELS__MAIN__MODEL"] == "Qwen/Qwen2.5-3B-Instruct"


# --- The Dockerfile --------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical = pending + stripped
        pending = ""
        keyword, _, arguments = logical.partition(" ")
        yield keyword.upper(), arguments.strip()
    assert not pending, "the Dockerfile ends in a continuation"


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return list(dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")))


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_base_and_command(dockerfile: list[tuple[str, str]]) -> None:
    bases = [arguments.split()[0] for keyword, arguments in dockerfile if keyword == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    final = _final_stage(dockerfile)
    commands = [json.loads(arguments) for keyword, arguments in final if keyword == "CMD"]
    assert commands[-1] == ["confide", "serve"]
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in final)


def test_dockerfile_installs_cpu_torch_before_confide(dockerfile: list[tuple[str, str]]) -> None:
    runs = [arguments for keyword, arguments in dockerfile if keyword == "RUN"]
    torch = next(i for i, run in enumerate(runs) if "torch==2.13.0" in run and "pip install" in run)
    package = next(i for i, run in enumerate(runs) if re.search(r"pip install (\.|\"\.\[[a-z,-]+\]\")(\s|$)", run))
    assert torch < package


def test_dockerfile_runs_offline_as_non_root(dockerfile: list[tuple[str, str]]) -> None:
    final = _final_stage(dockerfile)
    users = [arguments.split(":")[0] for keyword, arguments in final if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = " ".join(arguments for keyword, arguments in final if keyword == "ENV")
    assert re.search(r"\bHF_HUB_OFFLINE=1\b", env)
    assert re.search(r"\bCONFIDE_DATA_DIR=/data\b", env)


def test_dockerfile_copies_only_what_the_package_needs(dockerfile: list[tuple[str, str]]) -> None:
    sources: list[str] = []
    for keyword, arguments in dockerfile:
        if keyword != "COPY" or arguments.startswith("--from"):
            continue
        *copied, _destination = shlex.split(arguments)
        sources += copied
    assert "." not in sources and "./" not in sources, "COPY . would put .env and .venv in the image"
    missing = [source for source in sources if not (REPO / source).exists()]
    assert missing == [], "the Dockerfile copies paths the repository lacks"
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    readme = re.search(r'^readme\s*=\s*"([^"]+)"', pyproject, re.MULTILINE)
    if readme:
        assert readme[1] in sources, "pip install . needs the readme that pyproject.toml names"


# --- systemd --------------------------------------------------------------------------------------


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: sections of keys with every value given, continuations joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped[0] in "#;"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical, pending = pending + stripped, ""
        if logical.startswith("[") and logical.endswith("]"):
            current = sections.setdefault(logical[1:-1], {})
            continue
        key, equals, value = logical.partition("=")
        assert equals and current is not None, f"{path.name}:{number}: not 'Key=value' in a section"
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), f"{path.name}:{number}: bad key {key!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    assert not pending, f"{path.name} ends in a continuation"
    return sections


def parse_env_file(path: Path) -> dict[str, str]:
    """An EnvironmentFile= limited to what systemd and dotenv read alike: KEY=value, no quotes."""
    variables: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        key, equals, value = stripped.partition("=")
        assert equals and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"{path.name}:{number}"
        assert not value.startswith(("'", '"')) and "\\" not in value, f"{path.name}:{number}: keep it plain"
        assert key not in variables, f"{path.name}:{number}: {key} set twice"
        variables[key] = value.strip()
    return variables


def _environment_assignments(unit: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    assignments: dict[str, str] = {}
    for line in unit["Service"].get("Environment", []):
        for word in shlex.split(line):
            key, _, value = word.partition("=")
            assignments[key] = value
    return assignments


_EXEC_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _exec_variables(command: str) -> set[str]:
    return {braced or bare for braced, bare in _EXEC_VARIABLE.findall(command)}


VLLM_ENV_FILES = sorted(SYSTEMD.glob("vllm-*.env"))
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "ProtectHome": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
}


def test_systemd_files_are_there() -> None:
    names = {path.name for path in SYSTEMD.iterdir()}
    assert {"vllm@.service", "confide.service", "vllm-qwen.env", "vllm-mistral.env", "confide.env"} <= names


@pytest.mark.parametrize("name", ["vllm@.service", "confide.service"])
def test_unit_is_hardened_and_restarts(name: str) -> None:
    unit = parse_unit(SYSTEMD / name)
    assert {"Unit", "Service", "Install"} <= set(unit)
    service = unit["Service"]
    assert len(service["ExecStart"]) == 1 and service["ExecStart"][0].startswith("/opt/confide/.venv/bin/")
    assert service["Restart"] == ["on-failure"]
    assert service["User"][0] not in ("root", "0")
    for key, value in HARDENING.items():
        assert service.get(key) == [value], f"{name}: {key}={value}"
    families = set(service["RestrictAddressFamilies"][0].split())
    assert families <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    writable = service["ReadWritePaths"][0].split()
    assert writable and all(path.startswith("/var/lib/") for path in writable)
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_confide_unit() -> None:
    service = parse_unit(SYSTEMD / "confide.service")["Service"]
    assert service["ExecStart"] == ["/opt/confide/.venv/bin/confide serve"]
    assert service["EnvironmentFile"] == ["/etc/confide/confide.env"]
    env = _environment_assignments({"Service": service})
    assert env["CONFIDE_DATA_DIR"] in service["ReadWritePaths"][0].split()
    assert env["HF_HUB_OFFLINE"] == "1"


def test_vllm_template_unit() -> None:
    unit = parse_unit(SYSTEMD / "vllm@.service")
    service = unit["Service"]
    assert service["EnvironmentFile"] == ["/etc/confide/vllm-%i.env"]
    command = service["ExecStart"][0]
    words = command.split()
    assert words[:3] == ["/opt/confide/.venv/bin/vllm", "serve", "${MODEL}"]
    assert " --host 127.0.0.1 " in command and " --port ${PORT} " in command
    assert "--gpu-memory-utilization ${GPU_MEMORY_UTILIZATION}" in command
    env = _environment_assignments(unit)
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1"


@pytest.mark.parametrize("env_file", VLLM_ENV_FILES, ids=lambda p: p.name)
def test_vllm_env_file_defines_what_the_unit_uses(env_file: Path) -> None:
    unit = parse_unit(SYSTEMD / "vllm@.service")
    variables = parse_env_file(env_file)
    assert {"MODEL", "PORT", "CUDA_VISIBLE_DEVICES", "GPU_MEMORY_UTILIZATION"} <= set(variables)
    assert 1024 <= int(variables["PORT"]) <= 65535
    assert 0 < float(variables["GPU_MEMORY_UTILIZATION"]) <= 1
    assert re.fullmatch(r"\d+(,\d+)*", variables["CUDA_VISIBLE_DEVICES"])
    defined = set(_environment_assignments(unit)) | set(variables)
    used = _exec_variables(unit["Service"]["ExecStart"][0])
    assert used - defined == set()


def test_vllm_instances_do_not_collide() -> None:
    files = {path.name: parse_env_file(path) for path in VLLM_ENV_FILES}
    assert {"vllm-qwen.env", "vllm-mistral.env"} <= set(files)
    ports = [variables["PORT"] for variables in files.values()]
    assert len(ports) == len(set(ports))
    assert files["vllm-qwen.env"]["MODEL"] == "Qwen/Qwen2.5-7B-Instruct"
    assert files["vllm-mistral.env"]["MODEL"] == "mistralai/Mistral-7B-Instruct-v0.3"


def test_systemd_confide_env_loads(settings_class: type[BaseModel], monkeypatch: pytest.MonkeyPatch) -> None:
    variables = parse_env_file(SYSTEMD / "confide.env")
    unknown = sorted(name for name in variables if not setting_exists(settings_class, name))
    assert unknown == []
    settings = _load_settings(settings_class, variables, monkeypatch)
    instances = {path.name: parse_env_file(path) for path in VLLM_ENV_FILES}
    endpoints = {(f"http://127.0.0.1:{v['PORT']}/v1", v["MODEL"]) for v in instances.values()}
    configured = {(model.base_url, model.model) for model in settings.models.values()}
    assert configured == endpoints, "confide.env's models must be the example vLLM instances"
    assert settings.default_model in settings.models


@pytest.fixture(scope="module")
def systemd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding the units, stand-ins for the venv's programs, and the host's own units."""
    analyze = shutil.which("systemd-analyze")
    system_units = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None)
    # This machine kind ships systemd; a missing systemd-analyze is a broken setup, not a reason to skip.
    assert analyze is not None and system_units is not None, "systemd-analyze and the system units are needed"
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in SYSTEMD.glob("*.service"):
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    bin_dir = root / "opt/confide/.venv/bin"
    bin_dir.mkdir(parents=True)
    for program in ("confide", "vllm"):
        (bin_dir / program).write_text("#!/bin/sh\n", encoding="utf-8")
        (bin_dir / program).chmod(0o755)
    return root


@pytest.mark.parametrize("unit", ["confide.service", "vllm@qwen.service", "vllm@mistral.service"])
def test_systemd_analyze_verify(systemd_root: Path, unit: str) -> None:
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            f"--root={systemd_root}",
            "--man=no",
            "--generators=no",
            str(systemd_root / "etc/systemd/system" / unit),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown keys and unparsable values are only warnings to systemd: any output fails the test.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
