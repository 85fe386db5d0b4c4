"""What a running bridge is made of, in one bundle: built once by bridge.app.assemble (for `confide serve`, `confide
chat`, the tests' harness and the benchmarks alike) and handed whole to the dispatcher and the message handler,
instead of a dozen arguments that each caller had to line up again (and the tests' copy had dropped some)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.answering.answer import AnswerPipeline
from bridge.commands.handlers import Commands
from bridge.config import Settings
from bridge.dispatch.inbox import Inbox
from bridge.dispatch.outbox import Drafts, Outbox
from bridge.history.index import HistoryIndex
from bridge.intake.hearing import Hearing
from bridge.intake.persons import PersonDirectory
from bridge.models.llm import ModelClient
from bridge.ops.metrics import Metrics
from bridge.state.chats import Chats
from bridge.state.store import StateStore


@dataclass(frozen=True)
class WorkerOptions:
    default_model: str
    recent_turns: int = 6
    index_conversations: bool = True
    reanswer_every_s: float = 10.0  # how often answers owed after a fallback are tried (bridge/dispatch/reanswer.py)
    hearing: Hearing | None = None  # voice messages in direct chats, where a transcriber is configured


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: StateStore
    inbox: Inbox
    outbox: Outbox
    drafts: Drafts
    chats: Chats
    directory: PersonDirectory
    history: HistoryIndex
    models: ModelClient
    pipeline: AnswerPipeline
    commands: Commands
    options: WorkerOptions
    metrics: Metrics
