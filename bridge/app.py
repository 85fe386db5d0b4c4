"""Assembly: from settings to a running bridge (state, history, models, adapters), and back down."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bridge.answering.answer import AnswerPipeline
from bridge.commands.handlers import Commands
from bridge.config import Settings
from bridge.dispatch.dispatcher import Dispatcher
from bridge.dispatch.inbox import Inbox
from bridge.dispatch.outbox import Drafts, Outbox
from bridge.history.importers.registry import find_source
from bridge.history.index import HistoryIndex, build_history
from bridge.intake.adapter import Adapter, KeepsState, KnowsPersons
from bridge.intake.hearing import Hearing
from bridge.intake.persons import PersonDirectory
from bridge.intake.platforms import platforms
from bridge.models.energy import Energy, open_energy
from bridge.models.llm import ModelClient
from bridge.models.local_model import LOCAL_MODEL_NAME, LocalModelServer
from bridge.models.transcriber import build_transcriber
from bridge.ops.control import ControlServer
from bridge.ops.diskspace import DiskRoom, ensure_room_to_start
from bridge.ops.lockdown import ensure_private_dir, lock_down_environment
from bridge.ops.metrics import Metrics
from bridge.ops.privacy import check_endpoints
from bridge.services import Services, WorkerOptions
from bridge.state.chats import Chats
from bridge.state.db import StateDB
from bridge.state.persons import PersonStore
from bridge.state.store import StateStore
from bridge.state.usage import UsageLog

log = logging.getLogger(__name__)


class DataDirBusy(Exception):
    pass


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """The embedded index belongs to one process at a time; say so plainly instead of corrupting it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "confide.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DataDirBusy(
            f"{data_dir} is in use by Confide (pid {holder}). Stop it first, or use the chat commands "
            "(/forget) of the running instance."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def check_data_dir(settings: Settings) -> None:
    """Before anything is written there: every folder Confide keeps a history in is its owner's alone (refused with
    the chmod to run otherwise), and its disk has room to start on (NotEnoughSpace otherwise)."""
    ensure_private_dir(settings.data_dir)
    ensure_room_to_start(settings.data_dir, settings.min_free_mb)
    if settings.store.backend == "embedded" and not settings.shard_path.is_relative_to(settings.data_dir):
        ensure_private_dir(settings.shard_path, "CONFIDE_STORE__PATH")


@asynccontextmanager
async def open_history(settings: Settings) -> AsyncIterator[HistoryIndex]:
    """The history index alone, for CLI work such as import, forget and export."""
    lock_down_environment()
    check_endpoints(settings)
    check_data_dir(settings)
    with data_dir_lock(settings.data_dir):
        history = build_history(settings)
        await history.open()
        try:
            yield history
        finally:
            await history.close()


@asynccontextmanager
async def open_models(settings: Settings) -> AsyncIterator[tuple[ModelClient, str]]:
    """The configured models, or the embedded llama.cpp server when none is configured."""
    models = dict(settings.models)
    local: LocalModelServer | None = None
    if not models:
        local = LocalModelServer(settings.local_model, settings.data_dir / "logs" / "local-model.log")
        await local.start()
        models[LOCAL_MODEL_NAME] = local.model_settings
    client = ModelClient(models, settings.proxy_url, settings.model_wait_s)
    try:
        yield client, settings.default_model or next(iter(models))
    finally:
        await client.close()
        if local is not None:
            await local.stop()


async def _serve_cli_jobs(stack: AsyncExitStack, history: HistoryIndex, data_dir: Path) -> None:
    """`confide import`/`forget`/`export` while this process holds the index: over its local socket."""
    control = ControlServer(history, data_dir)
    try:
        await control.start()
    except OSError as exc:  # e.g. a data directory path too long for a Unix socket (108 bytes)
        log.warning("CLI jobs cannot reach this process (%s): stop it to import, forget or export", exc)
        return
    stack.push_async_callback(control.close)


async def _hearing(stack: AsyncExitStack, settings: Settings) -> Hearing | None:
    """Voice messages heard where a transcriber is configured; it is closed with the rest."""
    transcriber = build_transcriber(settings.transcriber, settings.proxy_url)
    if transcriber is None:
        return None
    stack.push_async_callback(transcriber.close)
    return Hearing(transcriber, settings.transcriber.max_audio_bytes)


@dataclass(frozen=True)
class Parts:
    """What a caller may hand `assemble` instead of having it built from the settings: the tests' harness and the
    benchmarks bring their own open index (one embedder for a whole test session) or energy meters on a fake clock."""

    history: HistoryIndex | None = None  # an open index the caller owns: no data-directory lock, no CLI socket
    energy: Energy | None = None  # None: the meters of settings.energy
    hearing: Hearing | None = None  # None: the transcriber of settings.transcriber, if any
    reanswer_every_s: float = 10.0  # how often answers owed after a fallback are tried


@dataclass
class Running:
    services: Services
    dispatcher: Dispatcher

    async def idle(self, channel: str) -> bool:
        """Nothing of this channel is waiting to be answered or delivered."""
        services = self.services
        return await services.inbox.unfinished(channel) == 0 and await services.outbox.unsent(channel) == 0


def build_state(settings: Settings) -> StateStore:
    """SQLite in the data directory, or PostgreSQL where CONFIDE_STATE_URL names one."""
    if settings.state_url is None:
        return StateDB(settings.state_path)
    from bridge.state.postgres import PostgresState  # psycopg is installed with the postgres extra only

    return PostgresState(settings.state_url.get_secret_value(), settings.state_pool_size)


async def _hand_over_state(db: StateStore, adapters: list[Adapter], directory: PersonDirectory) -> None:
    """Each adapter's platform tables brought to their last migration, and its handle on them given to it, with the
    persons: before the Dispatcher exists, so no run or delivery finds them missing."""
    for adapter in adapters:
        platform = platforms().get(adapter.channel)
        state = await db.platform_state(adapter.channel, platform.migrations if platform is not None else ())
        if isinstance(adapter, KeepsState):
            await adapter.attach_state(state)
        if isinstance(adapter, KnowsPersons):
            adapter.attach_directory(directory)


async def _persons(db: StateStore, settings: Settings) -> PersonDirectory:
    """The persons the state store keeps, seeded with the settings' (CONFIDE_PERSONS) it has never known."""
    store = PersonStore(db)
    added = await store.seed(settings.persons)
    if added:
        log.info("persons added from the settings: %s", ", ".join(added))
    return PersonDirectory(await store.all())


@asynccontextmanager
async def assemble(settings: Settings, adapters: list[Adapter], parts: Parts = Parts()) -> AsyncIterator[Running]:
    """Everything a running bridge needs, built once (`confide serve`, `confide chat`, tests, benchmarks), and taken
    down again in reverse order."""
    async with AsyncExitStack() as stack:
        metrics = Metrics(settings.state_path, settings.state_url)
        # First: a configured energy source this host cannot read stops start-up before anything loads.
        energy = parts.energy or await stack.enter_async_context(
            open_energy(settings.energy, settings.models, metrics.error)
        )
        history = parts.history
        if history is None:
            history = await stack.enter_async_context(open_history(settings))
            await _serve_cli_jobs(stack, history, settings.data_dir)
        db = build_state(settings)
        await db.open()
        stack.push_async_callback(db.close)
        directory = await _persons(db, settings)
        await _hand_over_state(db, adapters, directory)
        models, default_model = await stack.enter_async_context(open_models(settings))
        metrics.room = DiskRoom(settings.data_dir, settings.min_free_mb)
        pipeline = AnswerPipeline(history, models, settings.retrieval.limit, settings.retrieval.candidates, energy)
        hearing = parts.hearing or await _hearing(stack, settings)
        options = WorkerOptions(
            default_model=default_model,
            recent_turns=settings.recent_turns,
            index_conversations=settings.index_conversations,
            reanswer_every_s=parts.reanswer_every_s,
            hearing=hearing,
        )
        commands = Commands(history, pipeline, default_model, find_source, UsageLog(db), hearing, settings.imports)
        inbox = Inbox(db, metrics.room, lease_s=settings.lease_s)
        services = Services(
            settings, db, inbox, Outbox(db), Drafts(db), Chats(db), directory,
            history, models, pipeline, commands, options, metrics,
        )  # fmt: skip
        if settings.metrics.port:
            token = settings.metrics.token
            metrics.serve(settings.metrics.port, token.get_secret_value() if token else None)
            stack.callback(metrics.stop)
        yield Running(services, Dispatcher(services, adapters, settings.role))


class Stopper:
    """SIGTERM and SIGINT for `confide serve`, from the first moment: a signal while it starts stops it as soon as
    it has started (nothing is in flight yet); once running, the first signal starts a graceful stop and a second
    one stops at once. systemd, docker and compose stop a service with SIGTERM."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, grace_s: float, early: list[signal.Signals] | None = None) -> None:
        self.grace_s = grace_s
        self.requested = asyncio.Event()
        if early:  # a signal came before the event loop ran (`confide serve` remembers it)
            log.info("%s while starting: stopping once started", early[0].name)
            self.requested.set()
        self._target = asyncio.current_task()  # what a second signal cancels: the start, then the bridge
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: signal.Signals) -> None:
        if self.requested.is_set():
            log.warning("%s again: stopping now", signum.name)
            if self._target is not None:
                self._target.cancel()
            return
        log.info("%s: stopping (answers in flight may finish within %.0f s; signal again to stop now)",
                 signum.name, self.grace_s)  # fmt: skip
        self.requested.set()

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            loop.remove_signal_handler(signum)

    async def run(self, dispatcher: Dispatcher) -> None:
        """Run the dispatcher until a signal, then drain it (`Dispatcher.drain`, at most `grace_s`)."""
        work = asyncio.create_task(dispatcher.run(), name="confide-dispatcher")
        self._target = work
        waiting = asyncio.create_task(self.requested.wait())
        try:
            await asyncio.wait({work, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if self.requested.is_set() and not work.done():
                drain = asyncio.create_task(dispatcher.drain(self.grace_s), name="confide-drain")
                await asyncio.wait({work, drain}, return_when=asyncio.FIRST_COMPLETED)
                drain.cancel()
        finally:
            waiting.cancel()
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work  # a crash of the dispatcher itself is raised here
