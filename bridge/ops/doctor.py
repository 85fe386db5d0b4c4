"""`confide doctor`: every host Confide will contact, whether it may, and whether each part works."""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable

from rich.console import Console
from rich.table import Table

from bridge.config import Settings
from bridge.models.embedder import build_embedder
from bridge.models.llm import ModelClient
from bridge.models.local_model import packaged_gguf
from bridge.ops.privacy import endpoints

Check = tuple[str, Callable[[], Awaitable[str]]]


async def run_doctor(settings: Settings, console: Console) -> bool:
    hosts = Table(title="Hosts Confide will contact")
    for column in ("purpose", "url", "allowed", "why"):
        hosts.add_column(column)
    checked = endpoints(settings)
    if not settings.models:
        hosts.add_row("model local (embedded llama.cpp)", "http://127.0.0.1:<free port>/v1", "yes", "loopback")
    for e in checked:
        hosts.add_row(e.purpose, e.url, "yes" if e.allowed else "[red]NO[/red]", e.why)
    console.print(hosts)
    console.print(
        "Telemetry: off (HF_HUB_OFFLINE=1, DO_NOT_TRACK=1, ORT_DISABLE_TELEMETRY=1, no usage stats); proxy variables "
        "of the environment are ignored; nothing else is contacted."
    )

    results = Table(title="Checks")
    for column in ("check", "result"):
        results.add_column(column)
    ok = all(e.allowed for e in checked)
    refused = {e.purpose for e in checked if not e.allowed}
    for name, check in _checks(settings):
        if name in refused:
            results.add_row(name, "[red]not contacted[/red]: its host is not allowed")
            continue
        try:
            results.add_row(name, f"[green]ok[/green] {await check()}")
        except Exception as exc:
            ok = False
            results.add_row(name, f"[red]failed[/red] {type(exc).__name__}: {exc}")
    console.print(results)
    console.print("[green]All good.[/green]" if ok else "[red]Some checks failed.[/red]")
    return ok


def _checks(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    if settings.models:
        client = ModelClient(settings.models, settings.proxy_url)
        for name, model in settings.models.items():
            checks.append((f"model {name}", _model_check(client, name, model.model)))
    else:
        checks.append(("embedded model", _local_model_check(settings)))
    checks.append(("embedder", _embedder_check(settings)))
    checks.append(("store", _store_check(settings)))
    checks.append(("persons", _persons_check(settings)))
    if settings.energy.source != "none":
        checks.append((f"energy {settings.energy.source}", _energy_check(settings)))
    return checks


def _energy_check(settings: Settings) -> Callable[[], Awaitable[str]]:
    async def check() -> str:
        from bridge.models.energy import PrometheusSource, build_source

        gpu_sets = {name: tuple(sorted(set(m.gpus))) for name, m in settings.models.items() if m.gpus}
        if not gpu_sets:
            raise RuntimeError("no model names its GPUs (CONFIDE_MODELS__<NAME>__GPUS): nothing is measured")
        source = build_source(settings.energy, settings.models)  # NVML: raises here on a host without driver
        assert source is not None
        try:
            if isinstance(source, PrometheusSource):
                energy = settings.energy
                metric = energy.energy_metric if energy.prometheus_mode == "energy" else energy.power_metric
                values = await source.values(metric)
                wanted = sorted({g for gpus in gpu_sets.values() for g in gpus})
                missing = [g for g in wanted if g not in values]
                if missing:
                    raise RuntimeError(f"{metric} has no sample for {energy.gpu_label}={missing}")
                return f"{metric}: " + ", ".join(f"GPU {g} {values[g]:g}" for g in wanted)
            readings = [f"{name} GPUs {list(gpus)} {await source.read(gpus):.0f} J" for name, gpus in gpu_sets.items()]
        finally:
            await source.close()
        return "total energy: " + "; ".join(readings)

    return check


def _model_check(client: ModelClient, name: str, model_id: str) -> Callable[[], Awaitable[str]]:
    async def check() -> str:
        served = await client.list_remote_models(name)
        wrong = {url: ids for url, ids in served.items() if model_id not in ids}
        if wrong:
            raise RuntimeError("; ".join(f"{url} serves {ids}, not {model_id!r}" for url, ids in wrong.items()))
        return f"serves {model_id}" + (f" on {len(served)} replicas" if len(served) > 1 else "")

    return check


def _local_model_check(settings: Settings) -> Callable[[], Awaitable[str]]:
    async def check() -> str:
        gguf = settings.local_model.gguf_path or packaged_gguf()
        if not gguf.exists():
            raise FileNotFoundError(gguf)
        if importlib.util.find_spec("llama_cpp") is None:
            raise RuntimeError("llama-cpp-python is not installed (scripts/install.sh installs it)")
        return f"{gguf.name}, started on loopback when Confide runs"

    return check


def _embedder_check(settings: Settings) -> Callable[[], Awaitable[str]]:
    async def check() -> str:
        embedder = build_embedder(settings.embedder, settings.proxy_url)
        await embedder.open()
        try:
            vector = await embedder.embed_query("doctor")
        finally:
            await embedder.close()
        runtime = getattr(getattr(embedder, "encoder", None), "runtime", None)
        named = f"{embedder.identity.name}, dimension {len(vector)}"
        return named + (f", {runtime}" if runtime else "")

    return check


def _store_check(settings: Settings) -> Callable[[], Awaitable[str]]:
    async def check() -> str:
        if settings.store.backend == "server":
            from qdrant_client import AsyncQdrantClient

            assert settings.store.url is not None
            key = settings.store.api_key.get_secret_value() if settings.store.api_key else None
            client = AsyncQdrantClient(url=settings.store.url, api_key=key, check_compatibility=False)
            try:
                names = [c.name for c in (await client.get_collections()).collections]
            finally:
                await client.close()
            state = "exists" if settings.store.collection in names else "will be created"
            return f"reachable; collection {settings.store.collection!r} {state}"
        path = settings.shard_path
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"embedded shard at {path}"

    return check


def _persons_check(settings: Settings) -> Callable[[], Awaitable[str]]:
    async def check() -> str:
        """The persons as the state store keeps them (it also proves the state store opens: SQLite or PostgreSQL)."""
        from bridge.cli_persons import person_store

        async with person_store(settings) as store:
            persons = await store.all()
        return ", ".join(f"{p.id} ({len(p.accounts)} account(s))" for p in persons) or "none"

    return check
