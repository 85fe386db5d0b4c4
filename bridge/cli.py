"""The `confide` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from inspect import Parameter, Signature
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bridge import __version__
from bridge.cli_common import err, fail, history_access, log, run_async, settings_or_exit
from bridge.cli_persons import known_ids_now, persons_app
from bridge.config import Settings
from bridge.history.importers.base import Importer, WrongKind
from bridge.history.importers.registry import importer_classes
from bridge.history.imports import CannotImport, ImportJob, ImportProgress, import_into, open_checked
from bridge.history.store import Selector
from bridge.intake.adapter import Adapter, Terminal
from bridge.intake.platforms import enabled_platforms, platforms
from bridge.models.transcriber import HoldsAudio
from bridge.ops.early_stop import early_stops, hold_stop_signals
from bridge.ops.lockdown import private_files

if TYPE_CHECKING:
    pass

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Confide: answers from your own history.")
import_app = typer.Typer(no_args_is_help=True, help="Bring history in from exports and files.")
app.add_typer(import_app, name="import")
app.add_typer(persons_app, name="persons")


def version_callback(value: bool) -> None:
    if value:
        print(f"confide {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True)] = False,
) -> None:
    """Confide: a self-hosted assistant that answers from your own chats, mails and documents."""


@app.command()
def chat(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log to stderr instead of DATA_DIR/logs/")] = False,
) -> None:
    """Talk to Confide here, as the console account (CONFIDE_CONSOLE__ACCOUNT). Its log goes to
    DATA_DIR/logs/confide.log (with --verbose: to stderr)."""
    settings = settings_or_exit(quiet=not verbose)
    run_async(_chat(settings))


async def _chat(settings: Settings) -> None:
    from bridge.app import assemble

    console = _terminal(settings)
    async with assemble(settings, [console]) as running:
        console.watch_idle(lambda: running.idle(console.channel))
        if console.interactive:
            err.print(f"Confide {__version__}: ask about your history; /help for commands, Ctrl-D to leave.")
        work = asyncio.create_task(running.dispatcher.run())
        done = asyncio.create_task(console.finished.wait())
        await asyncio.wait({work, done}, return_when=asyncio.FIRST_COMPLETED)
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        done.cancel()


def _terminal(settings: Settings) -> Terminal:
    platform = platforms().get("console")
    if platform is None:
        raise fail("The console adapter is not installed (entry point confide.adapters: console).", 2)
    adapter = platform.build(settings)
    if not (hasattr(adapter, "watch_idle") and hasattr(adapter, "finished")):
        raise fail(f"The console platform built {type(adapter).__name__}, which cannot run in a terminal.", 2)
    return cast(Terminal, adapter)


@app.command()
def serve(
    role: Annotated[
        str | None,
        typer.Option(help="all (default), gateway (platform connections) or worker (answers); see CONFIDE_ROLE"),
    ] = None,
) -> None:
    """Run every configured platform adapter until stopped (SIGTERM or SIGINT: gracefully; twice: at once)."""
    # Held since the executable started (bridge/launch.py); again here for a caller that imported the CLI itself.
    # Before the event loop runs (imports, settings), a stop is remembered and carried out once started.
    hold_stop_signals()
    settings = settings_or_exit()
    if role is not None:
        if role not in ("all", "gateway", "worker"):
            raise fail(f"--role must be all, gateway or worker, not {role!r}", 2)
        settings = settings.model_copy(update={"role": role})
    if settings.role != "all" and settings.state_url is None:
        raise fail(
            "A gateway or a worker shares its state with other processes: set CONFIDE_STATE_URL (PostgreSQL).", 2
        )
    run_async(_serve(settings, early_stops))


async def _serve(settings: Settings, early: list[signal.Signals]) -> None:
    from bridge.app import Stopper, assemble

    adapters = build_platform_adapters(settings) if settings.role != "worker" else remote_channels(settings)
    if not adapters:
        raise fail("No platform adapter is configured yet. `confide chat` talks to Confide in this terminal.", 2)
    stopper = Stopper(settings.shutdown_grace_s, early)
    try:
        async with assemble(settings, adapters) as running:
            if stopper.requested.is_set():
                logging.getLogger(__name__).info("stopped while starting: nothing was in flight")
                return
            await stopper.run(running.dispatcher)
    except asyncio.CancelledError:
        logging.getLogger(__name__).warning("stopped while starting")
    finally:
        stopper.remove()


def build_platform_adapters(settings: Settings) -> list[Adapter]:
    """The adapters of every enabled platform (found through the `confide.adapters` entry points)."""
    return [platform.build(settings) for platform in enabled_platforms(settings)]


def remote_channels(settings: Settings) -> list[Adapter]:
    """A worker's view of every enabled platform: no connection (its gateway holds it)."""
    from bridge.dispatch.roles import RemoteChannel

    return [RemoteChannel(platform.name) for platform in enabled_platforms(settings)]


@app.command()
def health(
    wait: Annotated[float, typer.Option(help="Seconds to wait for readiness (0: ask once)")] = 0.0,
    live: Annotated[bool, typer.Option("--live", help="Ask whether it is alive (/healthz), not ready")] = False,
) -> None:
    """Exit 0 when the running `confide serve` takes and answers messages (its /readyz; --live: runs at all, its
    /healthz), else 1. For the compose healthcheck, the systemd unit and Kubernetes' probes (the endpoints listen on
    loopback only); needs CONFIDE_METRICS__PORT."""
    import time

    import httpx

    settings = settings_or_exit()
    if not settings.metrics.port:
        raise fail("Set CONFIDE_METRICS__PORT: readiness is served beside the metrics, on loopback.", 2)
    url = f"http://127.0.0.1:{settings.metrics.port}/{'healthz' if live else 'readyz'}"
    token = settings.metrics.token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    deadline = time.monotonic() + wait
    while True:
        try:
            response = httpx.get(url, timeout=5, trust_env=False, headers=headers)
        except httpx.HTTPError as exc:
            status, why = 0, f"not reachable ({exc})"
        else:
            status, why = response.status_code, response.text.strip() or "not ready (starting or stopping)"
            if why == "not ready":
                why = "not ready (starting or stopping)"
        if status == 200:
            print("alive" if live else "ready")
            raise typer.Exit(0)
        if time.monotonic() >= deadline:
            err.print(f"confide serve at {url}: {why}")
            raise typer.Exit(1)
        time.sleep(1.0)


@app.command()
def doctor() -> None:
    """Check every configured endpoint and model; list every host Confide will contact."""
    from bridge.ops.doctor import run_doctor

    settings = settings_or_exit()
    ok = asyncio.run(run_doctor(settings, Console()))
    raise typer.Exit(0 if ok else 1)


@app.command()
def forget(
    person: Annotated[str, typer.Option(help="Whose history")],
    source: Annotated[str | None, typer.Option(help="Only records from this source")] = None,
    since: Annotated[datetime | None, typer.Option(help="Only records at or after this time")] = None,
    until: Annotated[datetime | None, typer.Option(help="Only records before this time")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Everything of this person")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
) -> None:
    """Delete part or all of a person's history."""
    from bridge.commands.handlers import parse_date

    settings = settings_or_exit()
    known_person(settings, person)
    selector = Selector(
        source=source,
        since=parse_date(since.isoformat()) if since else None,
        until=parse_date(until.isoformat()) if until else None,
        everything=everything,
    )
    if selector.is_empty() and not everything:
        raise fail("Say what to forget: --source, --since/--until, or --all.", 2)
    run_async(_forget(settings, person, selector, yes))


async def _forget(settings: Settings, person: str, selector: Selector, yes: bool) -> None:
    async with history_access(settings) as history:
        count = await history.count(person, selector)
        if count == 0:
            err.print("Nothing matches.")
            return
        if not yes and not typer.confirm(f"Delete {count} record(s) of {person}'s history?"):
            err.print("Nothing deleted.")
            return
        deleted = await history.forget(person, selector)
        err.print(f"Deleted {deleted} record(s).")


@app.command()
def export(
    person: Annotated[str, typer.Option(help="Whose history")],
    out: Annotated[Path | None, typer.Option(help="File to write (default: standard output)")] = None,
) -> None:
    """Write a person's whole history as JSON lines."""
    settings = settings_or_exit()
    known_person(settings, person)
    run_async(_export(settings, person, out))


async def _export(settings: Settings, person: str, out: Path | None) -> None:
    async with history_access(settings) as history:
        stream = out.open("w", encoding="utf-8") if out else sys.stdout
        try:
            async for record in history.export(person):
                stream.write(json.dumps(record.model_dump(mode="json"), ensure_ascii=False) + "\n")
        finally:
            if out:
                stream.close()


@app.command()
def reindex() -> None:
    """Re-embed the whole history with the configured embedding model (after changing it): resumable, the old
    index kept until the new one is complete. Confide must not be running."""
    settings = settings_or_exit(quiet=True)
    run_async(_reindex(settings))


async def _reindex(settings: Settings) -> None:
    from bridge.app import DataDirBusy, data_dir_lock
    from bridge.history.reindex import ReindexProgress, reindex

    try:
        with data_dir_lock(settings.data_dir), Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err,
        ) as bar:  # fmt: skip
            tasks: dict[str, TaskID] = {}

            def shown(now: ReindexProgress) -> None:
                if now.person not in tasks:
                    tasks[now.person] = bar.add_task(f"Re-embedding {now.person}", total=now.total, count="")
                bar.update(tasks[now.person], completed=now.done, count=f"{now.done}/{now.total}")

            summary = await reindex(settings, shown)
    except DataDirBusy as exc:
        raise fail(f"{exc} Reindexing needs the index to itself.", 2) from None
    err.print(summary.describe())


PersonOption = Annotated[str, typer.Option(help="Whose history this is")]


def _import_command(kind: str, importer: type[Importer]) -> Callable[..., None]:
    """`confide import KIND PATH --person ID [options]`, described by the importer class itself."""

    def command(ctx: typer.Context, path: Path, person: str, **options: str | None) -> None:
        given = {k: v for k, v in options.items() if v is not None}
        terminal = ctx.find_object(_Terminal)
        run_import(kind, path, person, verbose=terminal is not None and terminal.verbose, **given)

    parameters = [
        Parameter("ctx", Parameter.KEYWORD_ONLY, annotation=typer.Context),
        Parameter("path", Parameter.KEYWORD_ONLY, annotation=Annotated[Path, typer.Argument(help=importer.path_help)]),
        Parameter("person", Parameter.KEYWORD_ONLY, annotation=PersonOption),
    ]
    for name, help_text in importer.options.items():
        option = Annotated[str | None, typer.Option(help=help_text)]
        parameters.append(Parameter(name, Parameter.KEYWORD_ONLY, default=None, annotation=option))
    command.__dict__["__signature__"] = Signature(parameters)  # what typer reads the options from
    command.__doc__ = importer.summary
    return command


def _add_import_commands() -> None:
    for kind, importer in importer_classes().items():
        import_app.command(kind)(_import_command(kind, importer))
    for platform in platforms().values():
        if platform.add_import_commands is not None:
            platform.add_import_commands(import_app)


@import_app.callback()
def _import_group(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log to stderr instead of DATA_DIR/logs/")] = False,
) -> None:
    """Imports show their progress bar and summary; logs go to DATA_DIR/logs/confide.log (-v: to stderr)."""
    ctx.obj = _Terminal(verbose)  # what a platform's own import command (`confide import matrix`) runs through


def run_import(kind: str, path: Path, person: str, verbose: bool = False, **options: str) -> None:
    settings = settings_or_exit(quiet=not verbose)
    known_person(settings, person)
    try:
        importer = open_checked(kind, path, person, settings.imports, **options)  # before anything is written
    except CannotImport as exc:
        raise fail(str(exc), 2) from None
    except (WrongKind, OSError) as exc:
        raise fail(f"{path} is not a {kind} export: {exc}", 2) from None
    except Exception as exc:  # a sniff that broke on a damaged file: a bug to log, still no traceback for the person
        log.exception("checking %s as a %s export failed", path, kind)
        raise fail(f"{path} could not be read as a {kind} export ({type(exc).__name__}: {exc})", 2) from None
    run_async(_import(settings, ImportJob(person, f"{kind} {path.name}", importer)))


async def _import(settings: Settings, job: ImportJob) -> None:
    """One import on this terminal (bridge.history.imports does it): bars while it runs, the summary after. The index is
    opened here or, while `confide serve` holds it, reached in that process (`history_access`)."""
    from bridge.intake.hearing import Hearing
    from bridge.models.transcriber import build_transcriber

    if job.note:
        err.print(job.note)
    holds_audio = isinstance(job.source, HoldsAudio)
    transcriber = build_transcriber(settings.transcriber, settings.proxy_url) if holds_audio else None
    hearing = Hearing(transcriber, settings.transcriber.max_audio_bytes) if transcriber is not None else None
    try:
        async with history_access(settings) as history:
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[count]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err,
            ) as bar:
                summary = await import_into(history, job, hearing, _ImportBars(bar, job.what))
    finally:
        if transcriber is not None:
            await transcriber.close()
    err.print(summary.describe())
    for problem in summary.errors[:10]:
        err.print(f"  [yellow]{escape(problem)}[/yellow]")  # a file's text: brackets in it are no markup
    if summary.problems > 10:
        err.print(f"  ... and {summary.problems - 10} more (see the log)")


class _ImportBars:
    """An import's progress as bars: records read, counted as they are read (an export is never parsed a second
    time to count it, so only fetched records have a total and a time left), and, where voice notes are
    transcribed, minutes of audio done and those left, estimated from the bytes left at the seconds per byte seen
    so far (notes already stored are never read, so a re-import ends early)."""

    def __init__(self, bar: Progress, what: str) -> None:
        self.bar = bar
        self.what = what
        self.records: TaskID | None = None
        self.audio: TaskID | None = None
        self.started = time.monotonic()

    def __call__(self, now: ImportProgress) -> None:
        if self.records is None:
            self.records = self.bar.add_task(f"Importing {self.what}", total=now.total, count="")
            if now.audio_bytes is not None:
                self.audio = self.bar.add_task("Transcribing voice notes", total=max(now.audio_bytes, 1), count="")
        elapsed = time.monotonic() - self.started
        rate = now.read / elapsed if elapsed else 0.0
        done = f"{now.read}/{now.total}" if now.total else f"{now.read}"
        self.bar.update(self.records, completed=now.read, count=f"{done} {rate:.0f}/s")
        if self.audio is not None and now.audio_bytes is not None:
            self.bar.update(self.audio, completed=min(now.heard_bytes, now.audio_bytes), count=_audio_count(now))


def _audio_count(now: ImportProgress) -> str:
    total = now.audio_bytes or 0
    per_byte = now.seconds_per_byte
    if per_byte is None:  # no note so far said how long it plays (not Opus or Vorbis): megabytes instead
        return f"{now.heard_bytes / 1e6:.1f} of {total / 1e6:.1f} MB of audio"
    minutes = now.heard_bytes * per_byte / 60
    left = max(0, total - now.heard_bytes) * per_byte / 60
    return f"{minutes:.1f} min of audio done, ~{left:.1f} min left"


class _Terminal:
    """`CommandLine` (bridge.history.imports) for a platform's own import command: this CLI's settings, errors and
    bars."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose

    def settings(self, person: str | None = None) -> Settings:
        settings = settings_or_exit(quiet=not self.verbose)
        if person is not None:
            known_person(settings, person)
        return settings

    def refuse(self, message: str) -> Exception:
        return fail(message, 2)

    def run(self, settings: Settings, job: Callable[[], Awaitable[ImportJob]]) -> None:
        async def made_then_imported() -> None:
            await _import(settings, await job())

        try:
            run_async(made_then_imported())
        except CannotImport as exc:
            raise fail(str(exc), 2) from None


def known_person(settings: Settings, person: str) -> None:
    known = known_ids_now(settings)
    if person not in known:
        raise fail(f"No person {person!r} is configured (known: {', '.join(known)}). See confide persons add.", 2)


_add_import_commands()


def main() -> None:
    private_files()
    app()


if __name__ == "__main__":
    main()
