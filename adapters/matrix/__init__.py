"""Matrix: the live adapter (matrix-nio, E2EE) and the room backfill (`confide import matrix --room`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from adapters.matrix.settings import MatrixSettings
from bridge.intake.platforms import Endpoint, Platform, configured

if TYPE_CHECKING:
    from adapters.matrix.backfill import Target
    from adapters.matrix.client import MatrixAdapter
    from bridge.config import Settings
    from bridge.history.imports import CommandLine, ImportJob


def build_adapter(settings: Settings) -> MatrixAdapter:
    from adapters.matrix.client import MatrixAdapter

    return MatrixAdapter(settings)


def _enabled(own: MatrixSettings) -> bool:
    return own.enabled


def _endpoints(own: MatrixSettings) -> list[Endpoint]:
    return [configured("matrix", own.homeserver)] if own.homeserver else []


def import_matrix(
    ctx: typer.Context,
    room: Annotated[str, typer.Option(help="Room id (!abc:example.org) or alias (#family:example.org)")],
    person: Annotated[str | None, typer.Option(help="Whose history this is")] = None,
    group: Annotated[
        bool, typer.Option("--group", help="The room's own history, which Confide answers from when asked there")
    ] = False,
) -> None:
    """Import a Matrix room's past messages (decrypted where Confide's device has the keys), into a person's
    history (--person) or, for a group, into the room's own (--group)."""
    from adapters.matrix.backfill import group_target, person_target
    from adapters.matrix.settings import matrix_settings

    command_line: CommandLine = ctx.obj  # the CLI's, handed over by `confide import`
    if (person is None) == (not group):
        raise command_line.refuse("Give either --person (whose history) or --group (the room's own history).")
    settings = command_line.settings(person)
    own = matrix_settings(settings)
    if not (own.homeserver and own.user_id):
        raise command_line.refuse(
            "Set CONFIDE_MATRIX__HOMESERVER and CONFIDE_MATRIX__USER_ID (and a password or token) first."
        )
    target = person_target(settings, person) if person is not None else group_target(settings)
    command_line.run(settings, lambda: _room_job(settings, room, target))


async def _room_job(settings: Settings, room: str, target: Target) -> ImportJob:
    """The room's messages, fetched, as an import of the person's or the group's history."""
    from adapters.matrix.backfill import BackfillError, asked_in_room, fetch_room, group_scope, undecryptable_note
    from adapters.matrix.session import MatrixLoginError
    from bridge.history.imports import CannotImport, ImportJob

    try:
        fetched = await fetch_room(settings, room, target)
    except (BackfillError, MatrixLoginError) as exc:
        raise CannotImport(str(exc)) from exc
    # In a group, a question to Confide is already in the room's history, indexed live under its own id.
    scope, twin = (group_scope(fetched.room_id), asked_in_room) if target.group else (target.scope, None)
    return ImportJob(scope, f"matrix {room}", fetched, twin=twin, note=undecryptable_note(fetched))


def _add_import_commands(import_app: typer.Typer) -> None:
    import_app.command("matrix")(import_matrix)


PLATFORM = Platform(
    name="matrix",
    settings=MatrixSettings,
    build=build_adapter,
    enabled=_enabled,
    endpoints=_endpoints,
    add_import_commands=_add_import_commands,
)
