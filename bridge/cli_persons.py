"""`confide persons add|remove|list|show`: who may talk to Confide, changed while it runs.

The persons live in the state store (bridge/state/persons.py); a running Confide follows a change within seconds.
These commands open the state store beside it (SQLite's WAL, or PostgreSQL), never its history index, except
`remove` and `show`, which count a person's history through the running process when there is one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from bridge.cli_common import fail, history_access, run_async, settings_or_exit
from bridge.config import PersonSettings, Settings
from bridge.history.store import Selector
from bridge.state.persons import AccountTaken, PersonStore

persons_app = typer.Typer(
    no_args_is_help=True,
    help="Who may talk to Confide; a running Confide follows every change within seconds.",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)  # plain: ids and accounts are not highlighted
Language = Literal["en", "it", "de", "fr", "es", "nl"]
HistoryChoice = Literal["keep", "delete"]


@asynccontextmanager
async def person_store(settings: Settings) -> AsyncIterator[PersonStore]:
    """The persons in the state store, seeded from the settings as a start of Confide seeds them."""
    from bridge.app import build_state

    db = build_state(settings)
    await db.open()
    try:
        store = PersonStore(db)
        await store.seed(settings.persons)
        yield store
    finally:
        await db.close()


def _settings() -> Settings:
    return settings_or_exit(quiet=True)


async def known_ids(settings: Settings) -> list[str]:
    async with person_store(settings) as store:
        return [person.id for person in await store.all()]


@persons_app.command("add")
def add(
    person_id: Annotated[str, typer.Argument(help="Short id (letters, digits, . _ -), as imports name it")],
    account: Annotated[
        list[str], typer.Option("--account", "-a", help="channel:address, e.g. telegram:123456789 (repeat for more)")
    ],
    name: Annotated[str, typer.Option(help="How Confide names them")] = "",
    language: Annotated[
        Language | None, typer.Option(help="Reply language where a message's own cannot be told")
    ] = None,
    time_zone: Annotated[str | None, typer.Option(help="IANA time zone, e.g. Europe/Rome")] = None,
) -> None:
    """Add a person, or change one (what is given replaces what was there)."""
    settings = _settings()
    try:
        person = PersonSettings(id=person_id, name=name, accounts=account, language=language, time_zone=time_zone)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise fail(f"Not added: {problems}", 2) from None
    run_async(_add(settings, person))


async def _add(settings: Settings, person: PersonSettings) -> None:
    async with person_store(settings) as store:
        try:
            new = await store.put(person)
        except AccountTaken as exc:
            raise fail(f"Not added: {exc}.", 2) from None
    accounts = ", ".join(person.accounts)
    verb = "Added" if new else "Changed"
    err.print(f"{verb} {person.id} ({accounts}). A running Confide answers them within seconds.")


@persons_app.command("remove")
def remove(
    person_id: Annotated[str, typer.Argument(help="Whose access ends")],
    history: Annotated[
        HistoryChoice | None, typer.Option(help="keep: their history stays; delete: it is deleted. Asked if not given")
    ] = None,
) -> None:
    """Remove a person: their messages are no longer answered. Asks what to do with their history."""
    run_async(_remove(_settings(), person_id, history))


async def _remove(settings: Settings, person_id: str, history: HistoryChoice | None) -> None:
    async with person_store(settings) as store:
        if await store.get(person_id) is None:
            raise fail(f"No person {person_id!r}. confide persons list shows who there is.", 1)
        if history == "keep":  # nothing to count or delete: the index is not opened
            await store.remove(person_id)
            err.print(f"Removed {person_id}: no longer answered. {_kept(person_id)}")
            return
        await _remove_asking(settings, store, person_id, history)


async def _remove_asking(settings: Settings, store: PersonStore, person_id: str, history: HistoryChoice | None) -> None:
    async with history_access(settings) as index:
        records = await index.count(person_id)
        if history is None:
            history = _ask(f"{person_id} has {records} record(s) of history. Keep it or delete it? (keep/delete)")
        await store.remove(person_id)
        if history == "keep":
            err.print(f"Removed {person_id}: no longer answered. {_kept(person_id, records)}")
            return
        deleted = await index.forget(person_id, Selector(everything=True))
    err.print(f"Removed {person_id}: no longer answered. Their history was deleted ({deleted} record(s)).")


def _kept(person_id: str, records: int | None = None) -> str:
    count = f" ({records} record(s))" if records is not None else ""
    return (
        f"Their history was kept{count}; confide forget --person {person_id} --all deletes it, "
        f"confide persons add {person_id} ... lets them back."
    )


def _ask(question: str) -> HistoryChoice:
    """keep or delete, asked until one of them is answered; no answer at all (no terminal) removes nobody."""
    while True:
        try:
            answer = str(typer.prompt(question, default="keep")).strip().lower()
        except (typer.Abort, EOFError):
            raise fail("Nobody was removed: say --history keep or --history delete.", 2) from None
        if answer == "keep":
            return "keep"
        if answer == "delete":
            return "delete"


@persons_app.command("list")
def list_persons() -> None:
    """Everyone who may talk to Confide."""
    run_async(_list(_settings()))


async def _list(settings: Settings) -> None:
    async with person_store(settings) as store:
        persons = await store.all()
    table = Table("id", "name", "accounts", "language", "time zone")
    for person in persons:
        table.add_row(person.id, person.name, "\n".join(person.accounts), person.language or "", person.time_zone or "")
    out.print(table)


@persons_app.command("show")
def show(person_id: Annotated[str, typer.Argument()]) -> None:
    """One person: their accounts and settings, and how much history they have."""
    run_async(_show(_settings(), person_id))


async def _show(settings: Settings, person_id: str) -> None:
    async with person_store(settings) as store:
        person = await store.get(person_id)
    if person is None:
        raise fail(f"No person {person_id!r}. confide persons list shows who there is.", 1)
    async with history_access(settings) as index:
        records = await index.count(person_id)
    out.print(f"{person.id}  {person.name}".rstrip())
    for account in person.accounts:
        out.print(f"  account    {account}")
    out.print(f"  language   {person.language or 'the one they write in'}")
    out.print(f"  time zone  {person.time_zone or 'UTC'}")
    out.print(f"  history    {records} record(s)")


def known_ids_now(settings: Settings) -> list[str]:
    """The persons' ids, for a command that checks its --person before it starts."""
    return asyncio.run(known_ids(settings))
