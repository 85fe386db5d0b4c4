"""The `confide` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bridge import __version__
from bridge.config import ConfigError, Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Confide: answers from your own history.")
import_app = typer.Typer(no_args_is_help=True, help="Bring history in from exports and files.")
app.add_typer(import_app, name="import")
err = Console(stderr=True)
log = logging.getLogger("confide")


def settings_or_exit() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore", "openai", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
    return settings


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]{message}[/red]")
    return typer.Exit(code)


def run_async(coro: object) -> None:
    from bridge.app import DataDirBusy
    from bridge.energy import EnergyUnavailable
    from bridge.local_model import LocalModelError
    from bridge.metrics import MetricsPortError
    from bridge.privacy import HostNotAllowed
    from bridge.store import IndexIncompatible

    errors = (DataDirBusy, HostNotAllowed, LocalModelError, EnergyUnavailable, MetricsPortError, IndexIncompatible)
    try:
        asyncio.run(coro)  # type: ignore[arg-type]
    except errors as exc:
        raise fail(str(exc), 2) from None
    except KeyboardInterrupt:
        err.print("bye")


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
def chat() -> None:
    """Talk to Confide here, as the console account (CONFIDE_CONSOLE__ACCOUNT)."""
    settings = settings_or_exit()
    run_async(_chat(settings))


async def _chat(settings: Settings) -> None:
    from adapters.console import ConsoleAdapter
    from bridge.app import assemble

    holder: dict[str, object] = {}

    async def idle() -> bool:
        return await holder["running"].idle("console")  # type: ignore[attr-defined]

    console = ConsoleAdapter(settings.console.account, idle)
    async with assemble(settings, [console], _find_source()) as running:
        holder["running"] = running
        if console.interactive:
            err.print(f"Confide {__version__}: ask about your history; /help for commands, Ctrl-D to leave.")
        work = asyncio.create_task(running.bridge.run())
        done = asyncio.create_task(console.finished.wait())
        await asyncio.wait({work, done}, return_when=asyncio.FIRST_COMPLETED)
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        done.cancel()


@app.command()
def serve() -> None:
    """Run every configured platform adapter until stopped."""
    settings = settings_or_exit()
    run_async(_serve(settings))


async def _serve(settings: Settings) -> None:
    from bridge.app import assemble

    adapters = build_platform_adapters(settings)
    if not adapters:
        raise fail("No platform adapter is configured yet. `confide chat` talks to Confide in this terminal.", 2)
    async with assemble(settings, adapters, _find_source()) as running:
        await running.bridge.run()


def _find_source():  # type: ignore[no-untyped-def]
    from adapters.importers import find_source

    return find_source


def build_platform_adapters(settings: Settings) -> list:  # type: ignore[type-arg]
    """The adapters of every configured platform; each package exposes `build_adapter(settings)`."""
    adapters = []
    if settings.telegram.enabled:
        from adapters.telegram import build_adapter as telegram

        adapters.append(telegram(settings))
    if settings.matrix.enabled:
        from adapters.matrix import build_adapter as matrix

        adapters.append(matrix(settings))
    if settings.email.smtp_enabled or settings.email.imap_enabled:
        from adapters.email import build_adapter as email

        adapters.append(email(settings))
    return adapters


@app.command()
def doctor() -> None:
    """Check every configured endpoint and model; list every host Confide will contact."""
    from bridge.doctor import run_doctor

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
    from bridge.commands import parse_date
    from bridge.store import Selector

    settings = settings_or_exit()
    _known_person(settings, person)
    selector = Selector(
        source=source,
        since=parse_date(since.isoformat()) if since else None,
        until=parse_date(until.isoformat()) if until else None,
        everything=everything,
    )
    if selector.is_empty() and not everything:
        raise fail("Say what to forget: --source, --since/--until, or --all.", 2)
    run_async(_forget(settings, person, selector, yes))


async def _forget(settings: Settings, person: str, selector: object, yes: bool) -> None:
    from bridge.app import open_history

    async with open_history(settings) as history:
        count = await history.count(person, selector)  # type: ignore[arg-type]
        if count == 0:
            err.print("Nothing matches.")
            return
        if not yes and not typer.confirm(f"Delete {count} record(s) of {person}'s history?"):
            err.print("Nothing deleted.")
            return
        deleted = await history.forget(person, selector)  # type: ignore[arg-type]
        err.print(f"Deleted {deleted} record(s).")


@app.command()
def export(
    person: Annotated[str, typer.Option(help="Whose history")],
    out: Annotated[Path | None, typer.Option(help="File to write (default: standard output)")] = None,
) -> None:
    """Write a person's whole history as JSON lines."""
    settings = settings_or_exit()
    _known_person(settings, person)
    run_async(_export(settings, person, out))


async def _export(settings: Settings, person: str, out: Path | None) -> None:
    from bridge.app import open_history

    async with open_history(settings) as history:
        stream = out.open("w", encoding="utf-8") if out else sys.stdout
        try:
            async for record in history.export(person):
                stream.write(json.dumps(record.model_dump(mode="json"), ensure_ascii=False) + "\n")
        finally:
            if out:
                stream.close()


DateOrder = Annotated[
    str | None, typer.Option(help="Force the date order of a WhatsApp export: dmy, mdy or ymd (default: detect)")
]
PersonOption = Annotated[str, typer.Option(help="Whose history this is")]


@import_app.command("whatsapp")
def import_whatsapp(
    path: Annotated[Path, typer.Argument(help="A chat export .txt or the .zip WhatsApp produces")],
    person: PersonOption,
    date_order: DateOrder = None,
) -> None:
    """Import a WhatsApp chat export (Android or iOS, with or without media)."""
    run_import("whatsapp", path, person, date_order=date_order)


@import_app.command("telegram")
def import_telegram(
    path: Annotated[Path, typer.Argument(help="result.json of a Telegram Desktop export (one chat or all)")],
    person: PersonOption,
) -> None:
    """Import a Telegram Desktop export in JSON."""
    run_import("telegram", path, person)


@import_app.command("mbox")
def import_mbox(path: Annotated[Path, typer.Argument(help="An mbox file")], person: PersonOption) -> None:
    """Import mails from an mbox file."""
    run_import("mbox", path, person)


@import_app.command("maildir")
def import_maildir(path: Annotated[Path, typer.Argument(help="A Maildir folder")], person: PersonOption) -> None:
    """Import mails from a Maildir."""
    run_import("maildir", path, person)


@import_app.command("files")
def import_files(
    path: Annotated[Path, typer.Argument(help="A document or a folder of documents")], person: PersonOption
) -> None:
    """Import documents: .txt, .md, .pdf, .docx, .html."""
    run_import("files", path, person)


@import_app.command("locomo")
def import_locomo(
    path: Annotated[Path, typer.Argument(help="A LoCoMo conversation .json")], person: PersonOption
) -> None:
    """Import a LoCoMo benchmark conversation (the retrieval benchmark's format)."""
    run_import("locomo", path, person)


# Below this size the export is parsed once up front to count it, so the progress bar can say time left.
COUNT_FIRST_BELOW_BYTES = 200 * 1024 * 1024


def run_import(kind: str, path: Path, person: str, **options: object) -> None:
    from adapters.importers import WrongKind, open_importer

    settings = settings_or_exit()
    _known_person(settings, person)
    importer = open_importer(kind, path, person, **options)
    try:
        importer.check()  # before anything is written
    except (WrongKind, OSError) as exc:
        raise fail(f"{path} is not a {kind} export: {exc}", 2) from None
    total = _count(importer, path)
    run_async(_import(settings, person, importer, f"{kind} {path.name}", total))


def _count(importer: object, path: Path) -> int | None:
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    if size > COUNT_FIRST_BELOW_BYTES:
        return None
    return sum(1 for _ in importer.items())  # type: ignore[attr-defined]


async def _import(settings: Settings, person: str, importer: object, what: str, total: int | None = None) -> None:
    from bridge.app import open_history
    from bridge.ingest import ingest

    async with open_history(settings) as history:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.0f}/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
        ) as bar:
            task = bar.add_task(f"Importing {what}", total=total, rate=0.0)

            def advance(count: int) -> None:
                bar.advance(task, count)
                elapsed = bar.tasks[0].elapsed or 0.0
                bar.update(task, rate=bar.tasks[0].completed / elapsed if elapsed else 0.0)

            summary = await ingest(history, person, importer.items(), on_batch=advance)  # type: ignore[attr-defined]
    err.print(summary.describe())
    for problem in summary.errors[:10]:
        err.print(f"  [yellow]{problem}[/yellow]")
    if summary.problems > 10:
        err.print(f"  ... and {summary.problems - 10} more (see the log)")


@import_app.command("matrix")
def import_matrix(
    room: Annotated[str, typer.Option(help="Room id (!abc:example.org) or alias (#family:example.org)")],
    person: Annotated[str, typer.Option(help="Whose history this is")],
) -> None:
    """Import a Matrix room's past messages (decrypted where Confide's device has the keys)."""
    from adapters.matrix.backfill import BackfillError, import_room
    from adapters.matrix.session import MatrixLoginError

    settings = settings_or_exit()
    _known_person(settings, person)
    if not (settings.matrix.homeserver and settings.matrix.user_id):
        raise fail("Set CONFIDE_MATRIX__HOMESERVER and CONFIDE_MATRIX__USER_ID (and a password or token) first.", 2)
    try:
        run_async(import_room(settings, room, person, err))
    except (BackfillError, MatrixLoginError) as exc:
        raise fail(str(exc), 2) from None


def _known_person(settings: Settings, person: str) -> None:
    if person not in {p.id for p in settings.persons}:
        known = ", ".join(p.id for p in settings.persons)
        raise fail(f"No person {person!r} is configured (known: {known}). See CONFIDE_PERSONS.", 2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
