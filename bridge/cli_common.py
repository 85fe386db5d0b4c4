"""What the CLI's commands share: settings and logging, errors said in words, async commands, the history index
(opened here, or the running process's)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from bridge.config import ConfigError, Settings, load_settings
from bridge.ops.lockdown import DataDirNotPrivate

if TYPE_CHECKING:
    from bridge.history.index import HistoryIndex
    from bridge.ops.control import RemoteHistory

err = Console(stderr=True)
log = logging.getLogger("confide")


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def settings_or_exit(quiet: bool = False) -> Settings:
    """The settings, and logging set up: to stderr (a service's journal), or, `quiet` (a conversation in this
    terminal), to DATA_DIR/logs/confide.log with only errors said here, in words and once each."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if quiet:
        _log_to_file(settings)
    else:
        logging.basicConfig(level=settings.log_level, stream=sys.stderr, format=LOG_FORMAT)
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "openai", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
    return settings


def _log_to_file(settings: Settings) -> None:
    from bridge.app import check_data_dir
    from bridge.ops.diskspace import NotEnoughSpace

    try:
        check_data_dir(settings)  # first: no log file in a folder others can read, nor on a disk too full to start
    except (DataDirNotPrivate, NotEnoughSpace) as exc:
        raise fail(str(exc), 2) from None
    path = settings.data_dir / "logs" / "confide.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter(LOG_FORMAT))
    said = logging.StreamHandler(sys.stderr)
    said.setLevel(logging.ERROR)
    said.addFilter(_OncePerMessage())
    said.setFormatter(logging.Formatter(f"%(message)s (details in {path})"))
    logging.basicConfig(level=settings.log_level, handlers=[to_file, said], force=True)


class _OncePerMessage(logging.Filter):
    """An error that repeats (a model down, retried every few seconds) is said in the conversation once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]{message}[/red]", soft_wrap=True)  # unwrapped: paths and commands to copy stay whole
    return typer.Exit(code)


def run_async(coro: Coroutine[Any, Any, Any]) -> None:
    from bridge.app import DataDirBusy
    from bridge.history.store import IndexIncompatible
    from bridge.models.energy import EnergyUnavailable
    from bridge.models.local_model import LocalModelError
    from bridge.ops.diskspace import NotEnoughSpace
    from bridge.ops.metrics import MetricsPortError
    from bridge.ops.privacy import HostNotAllowed
    from bridge.state.db import StateDamaged
    from bridge.state.store import SchemaTooNew

    errors = (
        DataDirBusy,
        DataDirNotPrivate,
        NotEnoughSpace,
        HostNotAllowed,
        LocalModelError,
        EnergyUnavailable,
        MetricsPortError,
        IndexIncompatible,
        SchemaTooNew,
        StateDamaged,
    )
    try:
        asyncio.run(coro)
    except errors as exc:
        raise fail(str(exc), 2) from None
    except KeyboardInterrupt:
        err.print("bye")


@asynccontextmanager
async def history_access(settings: Settings) -> AsyncIterator[HistoryIndex | RemoteHistory]:
    """The history index, opened here; or, while `confide serve` holds it, the running process's, over its local
    socket (bridge/ops/control.py): import, forget and export work while Confide answers."""
    from bridge.app import DataDirBusy, open_history
    from bridge.ops.control import RemoteHistory

    try:
        async with open_history(settings) as history:
            yield history
            return
    except DataDirBusy:
        remote = await RemoteHistory.connect(settings.data_dir)
        if remote is None:
            raise
    err.print("[dim]Confide is running: it does this job itself, beside its answers.[/dim]")
    try:
        yield remote
    finally:
        await remote.close()
