"""Disk space watched, not discovered: below a floor Confide takes no new message, and it never starts short of it.

A full disk used to be found by the embedded index: qdrant-edge writes its log into memory-mapped 32 MiB files
that are sparse, so a write the disk cannot back kills the process with SIGBUS (nothing logged, accepted mail left
half-done, and the same death at every restart). So the floor (`CONFIDE_MIN_FREE_MB`) keeps room for a whole log
piece plus a margin. Below it the inbox refuses new messages (`NoRoom`, which every adapter turns into "later":
SMTP 452, Telegram and Matrix not fetched), answers already taken go on, a warning is logged once, /readyz says why,
and intake resumes by itself once there is room again.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

MB = 1024 * 1024
CHECK_EVERY_S = 1.0  # statvfs is cheap, but every message asks


class NoRoom(Exception):
    """The data directory's disk is below the floor: the message was not taken; its sender should try later."""


class NotEnoughSpace(Exception):
    """Too little free space to start safely; nothing was opened."""


class DiskRoom:
    def __init__(self, path: Path, floor_mb: int) -> None:
        self.path = path
        self.floor = floor_mb * MB
        self._free = self.floor
        self._checked = -CHECK_EVERY_S
        self._low = False
        # Read from the event loop and from worker threads at once: one reading and one warning at a time (two
        # threads had both seen the disk turn low and both warned).
        self._reading = threading.Lock()

    def free_bytes(self) -> int:
        with self._reading:
            now = time.monotonic()
            if now - self._checked >= CHECK_EVERY_S:
                self._free, self._checked = shutil.disk_usage(self.path).free, now
                self._note(self._free < self.floor)
            return self._free

    def has_room(self) -> bool:
        return self.free_bytes() >= self.floor

    def describe(self) -> str:
        """The last reading, in words (has_room and check take a fresh one when it is due)."""
        return f"{self._free / MB:.0f} MB free on the disk of {self.path}, {self.floor / MB:.0f} MB needed"

    def check(self) -> None:
        """Raise NoRoom when below the floor (before a message is taken)."""
        if not self.has_room():
            raise NoRoom(f"no room for new messages: {self.describe()}")

    async def wait(self, poll_s: float = CHECK_EVERY_S) -> None:
        """Return once there is room (at once, normally); adapters wait here before fetching more."""
        while not self.has_room():  # noqa: ASYNC110 - the disk is polled: no event says it has room again
            await asyncio.sleep(poll_s)

    def _note(self, low: bool) -> None:
        """Said once when the disk runs low, once when it has room again: not at every message."""
        if low and not self._low:
            log.warning("the disk is nearly full (%s): new messages wait until there is room (free some space; "
                        "answers already taken go on)", self.describe())  # fmt: skip
        elif self._low and not low:
            log.warning("the disk has room again (%s): taking messages again", self.describe())
        self._low = low


def ensure_room_to_start(path: Path, floor_mb: int) -> None:
    """Refuse to start below the floor, saying how much is needed: better than dying of SIGBUS while opening."""
    free = shutil.disk_usage(path).free
    if free < floor_mb * MB:
        raise NotEnoughSpace(
            f"only {free / MB:.0f} MB are free on the disk of {path}; Confide needs at least {floor_mb} MB there to "
            "start safely (its index writes its log in 32 MiB pieces). Free some space, or move CONFIDE_DATA_DIR to a "
            "larger disk, and start again. Nothing was changed."
        )
