"""The `confide` executable's first instant: files private and stop signals held before anything slow is loaded.

Importing the CLI (typer, pydantic, the platforms) takes a few tenths of a second; a SIGTERM in that window used to
kill `confide serve` with 143, as if it had crashed. Here, before that import, a stop is remembered for `serve`
(bridge/ops/early_stop.py; carried out as a clean exit once it has started, bridge.app.Stopper) and a second one
ends the
start at once. Other commands keep Python's own handling of signals.
"""

from __future__ import annotations

import sys

from bridge.ops.early_stop import hold_stop_signals
from bridge.ops.lockdown import private_files


def _command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main() -> None:
    private_files()
    if _command(sys.argv[1:]) == "serve":
        hold_stop_signals()
    from bridge.cli import main as cli_main  # the slow import, after the handlers

    cli_main()


if __name__ == "__main__":
    main()
