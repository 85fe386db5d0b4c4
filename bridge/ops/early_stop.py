"""Stop signals held from the first instant of `confide serve`, until its event loop takes them over.

Kept apart from bridge/launch.py (which imports the CLI) and bridge/cli.py (which reads what was held), so neither
imports the other. Importing it costs nothing: only `signal`.
"""

from __future__ import annotations

import signal

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
