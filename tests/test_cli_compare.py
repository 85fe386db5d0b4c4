"""/compare and /usage through `confide chat` (a subprocess), with two model servers of different speed, a fake
DCGM exporter as the energy source, and Confide's own metrics endpoint scraped while it runs."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sqlite3
import struct
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli_helpers import CONFIDE, cli_env, run_cli
from tests.fakes.dcgm_exporter import FakeDcgm
from tests.fakes.openai_server import Behaviour, FakeOpenAI


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def read_until(stream: asyncio.StreamReader, marker: str, limit_s: float = 120) -> str:
    seen = ""
    async with asyncio.timeout(limit_s):
        while marker not in seen:
            line = await stream.readline()
            if not line:
                break
            seen += line.decode()
    return seen


def read_png(path: str) -> bytes:
    return Path(path).read_bytes()


async def test_compare_and_usage_in_the_console_with_energy_and_metrics(tmp_path: Path) -> None:
    fast = await FakeOpenAI(model="fast-model").start()
    slow = await FakeOpenAI(model="slow-model", answer=lambda m: "The key is under the flower pot [1]").start()
    fast.default, slow.default = Behaviour(chunk_delay_s=0.05), Behaviour(chunk_delay_s=0.12)
    dcgm = await FakeDcgm().start()  # GPU 0 draws 300 W, GPU 1 100 W
    port = free_port()
    models = {
        "fast": {"base_url": fast.base_url, "model": fast.model, "gpus": [0]},
        "slow": {"base_url": slow.base_url, "model": slow.model, "gpus": [1]},
    }
    env = cli_env(
        tmp_path, models=json.dumps(models), energy__source="prometheus", energy__prometheus_url=dcgm.url,
        energy__interval_s="0.2", metrics__port=str(port),
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *CONFIDE, "chat", env=env, cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(b"Where is the spare key?\n/compare fast slow\n/usage\n")
        await process.stdin.drain()
        output = await read_until(process.stdout, "usage.png]")  # the chart's line ends the /usage reply
        async with httpx.AsyncClient(trust_env=False) as client:
            scraped = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        process.stdin.close()
        _, errors = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
        for server in (fast, slow, dcgm):
            await server.stop()
    assert process.returncode == 0, errors.decode()
    assert output.count("confide> ") == 3, output + errors.decode()

    compared = output.split("confide> ")[2]
    assert compared.startswith("Comparing fast and slow on: “Where is the spare key?”")
    assert "── fast ──\nYou asked: Where is the spare key?" in compared
    assert "── slow ──\nThe key is under the flower pot" in compared  # a fresh history: nothing to cite
    stats = dict(re.findall(r"── (\w+) ──\n.*?\n⏱ (.*)", compared))
    watts = {name: float(re.search(r"· (\d+) W$", line)[1]) for name, line in stats.items()}  # type: ignore[index]
    assert watts["fast"] / watts["slow"] == pytest.approx(3.0, rel=0.15), stats
    for line in stats.values():
        assert re.match(r"first token \d+\.\d+ s · total \d+\.\d+ s · \d+ tokens · [\d.]+ tokens/s · 0\.\d{4} Wh", line)
    assert fast.requests[-1]["messages"] == slow.requests[-1]["messages"]
    [(alt, chart)] = re.findall(r"\n\n\[(.+): (/\S+\.png)\]", compared)
    png = read_png(chart)
    assert Path(chart).parent == tmp_path / "charts" and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (800, 450) and "fast" in alt and "slow" in alt

    usage = output.split("confide> ")[3]
    assert re.search(r"fast: 2 answer\(s\), \d+ tokens in, \d+ out, 0\.\d{4} Wh", usage), usage
    assert re.search(r"slow: 1 answer\(s\), \d+ tokens in, \d+ out, 0\.\d{4} Wh", usage), usage
    [usage_chart] = re.findall(r"\n\n\[.+: (/\S+usage\.png)\]", usage)
    assert read_png(usage_chart).startswith(b"\x89PNG\r\n\x1a\n")

    metrics = samples(scraped)

    def value(name: str, **labels: str) -> float:
        return metrics.get((name, frozenset(labels.items())), 0.0)

    assert value("confide_messages_total", channel="console", outcome="answered") == 1
    assert value("confide_messages_total", channel="console", outcome="compared") == 1
    assert value("confide_messages_total", channel="console", outcome="command") == 1
    assert value("confide_answer_latency_seconds_count", model="fast") == 2
    assert value("confide_tokens_total", model="slow", kind="completion") == len(slow.answer([]).split())
    assert value("confide_tokens_total", model="fast", kind="prompt") > 0
    assert value("confide_energy_wh_total", model="fast") > value("confide_energy_wh_total", model="slow") > 0
    assert value("confide_queue_depth", channel="console") == 0
    assert ("confide_queue_depth", frozenset({("channel", "email")})) in metrics

    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        rows = db.execute("SELECT person, model, energy_wh > 0 FROM usage ORDER BY id").fetchall()
    assert rows == [("me", "fast", 1), ("me", "fast", 1), ("me", "slow", 1)]


async def test_nvml_configured_where_it_cannot_work_stops_start_up_with_a_message(tmp_path: Path) -> None:
    models = json.dumps({"m": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "gpus": [99]}})
    result = await run_cli(["chat"], cli_env(tmp_path, models=models, energy__source="nvml"))
    assert result.code == 2
    # Without a driver NVML cannot start; with one, GPU 99 does not exist: either way, before anything runs.
    assert "NVIDIA driver" in result.stderr or "GPU 99 is configured" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


async def test_doctor_lists_and_checks_the_energy_endpoint(tmp_path: Path) -> None:
    llm, dcgm = await FakeOpenAI().start(), await FakeDcgm().start()
    models = json.dumps({"main": {"base_url": llm.base_url, "model": llm.model, "gpus": [1]}})
    env = cli_env(tmp_path, models=models, energy__source="prometheus", energy__prometheus_url=dcgm.url)
    healthy = await run_cli(["doctor"], env)
    await llm.stop()
    await dcgm.stop()
    assert healthy.code == 0, healthy.stdout + healthy.stderr
    assert "energy prometheus" in healthy.stdout and dcgm.url in healthy.stdout
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION: GPU 1" in healthy.stdout
    public = cli_env(tmp_path, models=models, energy__source="prometheus",
                     energy__prometheus_url="http://203.0.113.9:9400/metrics")  # fmt: skip
    refused = await run_cli(["chat"], public)
    assert refused.code == 2 and "energy prometheus: http://203.0.113.9:9400/metrics" in refused.stderr
