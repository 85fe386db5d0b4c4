"""Matrix: the live adapter (matrix-nio, E2EE) and the room backfill (`confide import matrix --room`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from adapters.matrix.settings import MatrixSettings
from bridge.platforms import Endpoint, Platform, configured

if TYPE_CHECKING:
    from adapters.matrix.client import MatrixAdapter
    from bridge.config import Settings
    from bridge.messages import HistoryRecord


def build_adapter(settings: Settings) -> MatrixAdapter:
    from adapters.matrix.client import MatrixAdapter

    return MatrixAdapter(settings)


def _enabled(own: MatrixSettings) -> bool:
    return own.enabled


def _endpoints(own: MatrixSettings) -> list[Endpoint]:
    return [configured("matrix", own.homeserver)] if own.homeserver else []


def import_matrix(
    room: Annotated[str, typer.Option(help="Room id (!abc:example.org) or alias (#family:example.org)")],
    person: Annotated[str, typer.Option(help="Whose history this is")],
) -> None:
    """Import a Matrix room's past messages (decrypted where Confide's device has the keys)."""
    from adapters.matrix.backfill import BackfillError, fetch_room, undecryptable_note
    from adapters.matrix.session import MatrixLoginError
    from adapters.matrix.settings import matrix_settings
    from bridge import cli

    settings = cli.settings_or_exit()
    cli.known_person(settings, person)
    own = matrix_settings(settings)
    if not (own.homeserver and own.user_id):
        raise cli.fail("Set CONFIDE_MATRIX__HOMESERVER and CONFIDE_MATRIX__USER_ID (and a password or token) first.", 2)

    async def fetch() -> list[HistoryRecord]:
        fetched = await fetch_room(settings, room, person)
        if note := undecryptable_note(fetched):
            cli.err.print(note)
        return fetched.records

    try:
        cli.run_async(cli.import_records(settings, person, f"matrix {room}", fetch))
    except (BackfillError, MatrixLoginError) as exc:
        raise cli.fail(str(exc), 2) from None


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
