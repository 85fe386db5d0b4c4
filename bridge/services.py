"""What a running bridge is made of, in one bundle: built once by bridge.app.assemble (for `confide serve`, `confide
chat`, the tests' harness and the benchmarks alike) and handed whole to the dispatcher and the message handler,
instead of a dozen arguments that each caller had to line up again (and the tests' copy had dropped some)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.answer import AnswerPipeline
from bridge.chats import Chats
from bridge.commands import Commands
from bridge.config import Settings
from bridge.hearing import Hearing
from bridge.history import HistoryIndex
from bridge.inbox import Inbox
from bridge.llm import ModelClient
from bridge.metrics import Metrics
from bridge.outbox import Drafts, Outbox
from bridge.persons import PersonDirectory
from bridge.state import StateDB


@dataclass(frozen=True)
class WorkerOptions:
    default_model: str
    recent_turns: int = 6
    index_conversations: bool = True
    reanswer_every_s: float = 10.0  # how often answers owed after a fallback are tried (bridge/reanswer.py)
    hearing: Hearing | None = None  # voice messages in direct chats, where a transcriber is configured


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: StateDB
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
