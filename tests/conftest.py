"""Fixtures only (helpers are in tests/helpers.py): the real packaged embedder (loaded once), fake model servers, and a
bridge in-process."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import bridge  # noqa: F401  (locks the environment down before any ML import)
from benchmarks.peers import PostgresCluster
from bridge.config import EmbedderSettings, ModelSettings
from bridge.history.index import HistoryIndex
from bridge.history.store.edge import EdgeStore
from bridge.models.embedder import LocalEmbedder
from bridge.models.energy import Energy
from bridge.ops.lockdown import private_files
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.recording_adapter import RecordingAdapter
from tests.harness import Harness
from tests.helpers import make_settings

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
def postgres() -> Iterator[PostgresCluster]:
    """A private PostgreSQL on loopback (benchmarks/peers.py), started the first time a test asks for it."""
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def state_url(postgres: PostgresCluster) -> str:
    """A fresh, empty PostgreSQL database for this test's state."""
    return postgres.new_database()


@pytest.fixture(scope="session")
async def embedder() -> AsyncIterator[LocalEmbedder]:
    model = LocalEmbedder(packaged=EmbedderSettings().packaged)  # the packaged default, as a fresh install has
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


@pytest.fixture
def harness_factory(tmp_path: Path, history: HistoryIndex) -> Callable[..., Harness]:
    def build(models: dict[str, ModelSettings], energy: Energy | None = None, **overrides: Any) -> Harness:
        settings = make_settings(tmp_path, models, **overrides)
        return Harness(settings, history, RecordingAdapter(), energy=energy)

    return build
