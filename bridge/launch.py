"""The `confide` executable's first instant: files private and stop signals held before anything slow is loaded.

Importing the CLI (typer, pydantic, the platforms) takes a few tenths of a second; a SIGTERM in that window used to
kill `confide serve` with 143, as if it had crashed. Here, before that import, a stop is remembered for `serve`
(carried out as a clean exit once it has started, bridge.app.Stopper) and a second one ends the start at once.
Other commands keep Python's own handling of signals.
"""

from __future__ import annotations

import signal
import sys

from bridge.lockdown import private_files

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Stop signals that came before `confide serve`'s event loop ran, oldest first.
early_stops: list[signal.Signals] = []


def _remember(signum: int, frame: object) -> None:
    if early_stops:  # a second stop while starting: stop at once
        raise KeyboardInterrupt
    early_stops.append(signal.Signals(signum))


def hold_stop_signals() -> None:
    """Remember SIGTERM/SIGINT until the running service installs its own handlers (idempotent)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _remember)


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
    # `python -m bridge.launch` runs this file as __main__, a second copy of the module: hand over to the module
    # proper, whose `early_stops` bridge.cli reads (a stop remembered here would otherwise be lost).
    from bridge.launch import main as launched

    launched()
