"""A bridge in-process for tests, assembled by bridge.app.assemble itself (not a copy of it) on a real state
database, the test's own open index and a model server of the tests."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack

from bridge.app import Parts, Running, assemble
from bridge.config import Settings
from bridge.history.index import HistoryIndex
from bridge.intake.adapter import Adapter
from bridge.intake.hearing import Hearing
from bridge.models.energy import Energy
from bridge.services import Services
from tests.fakes.recording_adapter import RecordingAdapter


class Harness:
    def __init__(
        self,
        settings: Settings,
        history: HistoryIndex,
        adapter: Adapter | RecordingAdapter,
        reanswer_every_s: float = 10.0,
        hearing: Hearing | None = None,
        energy: Energy | None = None,
    ) -> None:
        self.settings = settings
        self.history = history
        self.adapter = adapter
        self.parts = Parts(history=history, energy=energy, hearing=hearing, reanswer_every_s=reanswer_every_s)
        self.task: asyncio.Task[None] | None = None
        self._stack: AsyncExitStack | None = None
        self._running: Running | None = None

    async def start(self) -> Harness:
        # As build_history does in bridge.app for the index it opens: the gate's threshold comes from the settings.
        self.history.min_relevance = self.settings.retrieval.min_relevance
        self._stack = AsyncExitStack()
        self._running = await self._stack.enter_async_context(assemble(self.settings, [self.adapter], self.parts))  # type: ignore[list-item]
        self.task = asyncio.create_task(self.dispatcher.run())
        return self

    @property
    def running(self) -> Running:
        assert self._running is not None, "the harness is not started"
        return self._running

    @property
    def services(self) -> Services:
        return self.running.services

    def __getattr__(self, name: str) -> object:
        """dispatcher, db, inbox, outbox, models, pipeline, commands, metrics ...: those of the assembled services."""
        if name.startswith("_") or self._running is None:
            raise AttributeError(name)
        if name == "dispatcher":
            return self._running.dispatcher
        return getattr(self._running.services, name)

    async def stop(self) -> None:
        """Stop abruptly, as a crash would: tasks are cancelled wherever they are."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self._stack is not None:
            await self._stack.aclose()

    async def __aenter__(self) -> Harness:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
