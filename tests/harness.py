"""A bridge assembled in-process for tests, on a real state database, index and model server."""

from __future__ import annotations

import asyncio
import contextlib

from bridge.adapter import Adapter
from bridge.answer import AnswerPipeline
from bridge.chats import Chats
from bridge.commands import Commands
from bridge.config import Settings
from bridge.hearing import Hearing
from bridge.history import HistoryIndex
from bridge.importers.registry import find_source
from bridge.inbox import Inbox
from bridge.llm import ModelClient
from bridge.outbox import Drafts, Outbox
from bridge.persons import Directory
from bridge.state import StateDB
from bridge.usage import UsageLog
from bridge.worker import Bridge, WorkerOptions
from tests.recording_adapter import RecordingAdapter


class Harness:
    def __init__(
        self,
        settings: Settings,
        history: HistoryIndex,
        adapter: Adapter | RecordingAdapter,
        reanswer_every_s: float = 10.0,
        hearing: Hearing | None = None,
    ) -> None:
        self.reanswer_every_s = reanswer_every_s
        self.hearing = hearing
        self.settings = settings
        self.history = history
        self.adapter = adapter
        self.db: StateDB | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Harness:
        self.db = StateDB(self.settings.state_path)
        await self.db.open()
        self.models = ModelClient(self.settings.models)
        default = self.settings.default_model or next(iter(self.settings.models))
        self.inbox, self.outbox = Inbox(self.db), Outbox(self.db)
        # As build_history does in bridge.app: the relevance gate's threshold comes from the settings.
        self.history.min_relevance = self.settings.retrieval.min_relevance
        self.pipeline = AnswerPipeline(self.history, self.models, self.settings.retrieval.limit)
        self.bridge = Bridge(
            self.inbox,
            self.outbox,
            Drafts(self.db),
            Chats(self.db),
            Directory(self.settings.persons),
            self.history,
            self.pipeline,
            Commands(self.history, self.pipeline, default, find_source, UsageLog(self.db), self.hearing),
            [self.adapter],
            WorkerOptions(
                default,
                self.settings.recent_turns,
                self.settings.index_conversations,
                self.reanswer_every_s,
                self.hearing,
            ),
        )
        self.task = asyncio.create_task(self.bridge.run())
        return self

    async def stop(self) -> None:
        """Stop abruptly, as a crash would: tasks are cancelled wherever they are."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.models.close()
        if self.db is not None:
            await self.db.close()

    async def __aenter__(self) -> Harness:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
