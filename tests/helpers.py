"""Helpers the tests share: settings for an in-process bridge, a model of the tests' own server, waiting for a
condition, a plain picture. Fixtures stay in conftest.py; the fake peers are in tests/fakes/."""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.config import ModelSettings, PersonSettings, Settings, settings_class
from tests.fakes.openai_server import FakeOpenAI


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
