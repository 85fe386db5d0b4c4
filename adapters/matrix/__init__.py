"""Matrix: the live adapter (matrix-nio, E2EE) and the room backfill (`confide import matrix --room`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from adapters.matrix.settings import MatrixSettings
from bridge.platforms import Endpoint, Platform, configured

if TYPE_CHECKING:
    from adapters.matrix.backfill import Target
    from adapters.matrix.client import MatrixAdapter
    from bridge.config import Settings


def build_adapter(settings: Settings) -> MatrixAdapter:
    from adapters.matrix.client import MatrixAdapter

    return MatrixAdapter(settings)


def _enabled(own: MatrixSettings) -> bool:
    return own.enabled


def _endpoints(own: MatrixSettings) -> list[Endpoint]:
    return [configured("matrix", own.homeserver)] if own.homeserver else []


def import_matrix(
    room: Annotated[str, typer.Option(help="Room id (!abc:example.org) or alias (#family:example.org)")],
    person: Annotated[str | None, typer.Option(help="Whose history this is")] = None,
    group: Annotated[
        bool, typer.Option("--group", help="The room's own history, which Confide answers from when asked there")
    ] = False,
) -> None:
    """Import a Matrix room's past messages (decrypted where Confide's device has the keys), into a person's
    history (--person) or, for a group, into the room's own (--group)."""
    from adapters.matrix.backfill import BackfillError, group_target, person_target
    from adapters.matrix.session import MatrixLoginError
    from adapters.matrix.settings import matrix_settings
    from bridge import cli

    settings = cli.settings_or_exit()
    if (person is None) == (not group):
        raise cli.fail("Give either --person (whose history) or --group (the room's own history).", 2)
    if person is not None:
        cli.known_person(settings, person)
    own = matrix_settings(settings)
    if not (own.homeserver and own.user_id):
        raise cli.fail("Set CONFIDE_MATRIX__HOMESERVER and CONFIDE_MATRIX__USER_ID (and a password or token) first.", 2)
    target = person_target(settings, person) if person is not None else group_target(settings)
    try:
        cli.run_async(_import_room(settings, room, target))
    except (BackfillError, MatrixLoginError) as exc:
        raise cli.fail(str(exc), 2) from None


async def _import_room(settings: Settings, room: str, target: Target) -> None:
    from adapters.matrix.backfill import asked_in_room, fetch_room, group_scope, undecryptable_note
    from bridge import cli

    fetched = await fetch_room(settings, room, target)
    if note := undecryptable_note(fetched):
        cli.err.print(note)
    # In a group, a question to Confide is already in the room's history, indexed live under its own id.
    scope, twin = (group_scope(fetched.room_id), asked_in_room) if target.group else (target.scope, None)
    await cli.import_records(settings, scope, f"matrix {room}", lambda: fetched.records, twin=twin)


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
