"""Shared fixtures: the real packaged embedder (loaded once), fake model servers, and a bridge in-process."""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import bridge  # noqa: F401  (locks the environment down before any ML import)
from bridge.config import ModelSettings, PersonSettings, Settings, settings_class
from bridge.embedder import LocalEmbedder
from bridge.energy import Energy
from bridge.history import HistoryIndex
from bridge.lockdown import private_files
from bridge.store.edge import EdgeStore
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import Harness
from tests.recording_adapter import RecordingAdapter

pytest_plugins = ["tests.deadline", "tests.other_user"]  # the other_user fixture

# The suite is hermetic: an operator who has configured Confide has CONFIDE_* in their shell (a model, a data
# directory, a mail relay), and a test must never pick them up; every test passes its settings explicitly.
# tests/test_hermetic.py runs part of the suite in such a shell.
for _name in [name for name in os.environ if name.startswith("CONFIDE_")]:
    del os.environ[_name]

# As the `confide` executable does (bridge/launch.py): folders the tests make for Confide's data are private, which
# Confide requires of its data directory. tests/test_hostile.py checks the same with the shell's usual umask 022.
private_files()


@pytest.fixture(scope="session")
async def embedder() -> AsyncIterator[LocalEmbedder]:
    model = LocalEmbedder()
    await model.open()
    yield model
    await model.close()


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI().start()
    yield server
    await server.stop()


@pytest.fixture
async def history(tmp_path: Path, embedder: LocalEmbedder) -> AsyncIterator[HistoryIndex]:
    store = EdgeStore(tmp_path / "qdrant")
    index = HistoryIndex(store, embedder)
    await store.open(embedder.dimension)
    yield index
    await store.close()


def make_settings(tmp_path: Path, models: dict[str, ModelSettings], **overrides: Any) -> Settings:
    persons = [
        PersonSettings(id="alice", name="Alice", accounts=["telegram:100", "console:alice"]),
        PersonSettings(id="bob", name="Bob", accounts=["telegram:200"]),
    ]
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "persons": persons,
        "models": models,
        # Platform and pipeline tests ask about nothing in particular and check what reaches the model; the
        # relevance gate has tests of its own (test_answer_gate.py, test_cli.py) that leave it on.
        "retrieval": {"min_relevance": 0},
        "model_wait_s": 0,  # a model that is down gives the fallback at once, unless a test waits for it
    }
    values.update(overrides)
    return settings_class()(_env_file=None, **values)


@pytest.fixture
def harness_factory(tmp_path: Path, history: HistoryIndex) -> Callable[..., Harness]:
    def build(models: dict[str, ModelSettings], energy: Energy | None = None, **overrides: Any) -> Harness:
        settings = make_settings(tmp_path, models, **overrides)
        return Harness(settings, history, RecordingAdapter(), energy=energy)

    return build


def model_for(server: FakeOpenAI, **fields: Any) -> ModelSettings:
    values: dict[str, Any] = {"base_url": server.base_url, "model": server.model, "retries": 2, "timeout_s": 10}
    values.update(fields)
    return ModelSettings(**values)


async def eventually(predicate: Callable[[], Any], within_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def plain_png(width: int, height: int) -> bytes:
    """A valid white RGB PNG of that size, for what sends pictures without drawing them."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff" * 3 * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
