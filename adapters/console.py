"""The console adapter: you are a person talking to the same pipeline, from a terminal or a pipe.

Lines on stdin are messages; replies go to stdout. When stdin ends, the adapter waits until every
message it accepted (and any left over from an interrupted run) is answered, then reports `finished`.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pydantic import BaseModel, Field

from bridge.intake.adapter import Capabilities, InboxPort
from bridge.intake.platforms import Platform, section
from bridge.messages import Image, IncomingMessage, OutgoingReply
from bridge.ops.diskspace import NoRoom

if TYPE_CHECKING:
    from bridge.config import Settings

CHANNEL = "console"


class ConsoleSettings(BaseModel):
    account: str = Field("me", description="Who you are in `confide chat` (matches a console: account)")


async def _never_idle() -> bool:
    return False


class ConsoleAdapter:
    channel = CHANNEL
    capabilities = Capabilities(can_edit=False)
    bot_names: tuple[str, ...] = ()

    def __init__(
        self, account: str, stdin: TextIO | None = None, stdout: TextIO | None = None, files: Path | None = None
    ) -> None:
        self.account = account
        self.files = files  # where pictures of replies (charts) are written; None: only their description
        self.is_idle: Callable[[], Awaitable[bool]] = _never_idle
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.interactive = self.stdin.isatty()
        self.finished = asyncio.Event()
        self.session = uuid.uuid4().hex[:12]

    def watch_idle(self, is_idle: Callable[[], Awaitable[bool]]) -> None:
        """How to tell that everything accepted is answered (the running bridge knows; we ask it at the end)."""
        self.is_idle = is_idle

    async def run(self, inbox: InboxPort) -> None:
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        # A daemon thread, not an executor: a blocked read must never hold up shutdown.
        threading.Thread(target=self._read, args=(loop, lines), daemon=True, name="console-stdin").start()
        self._prompt()
        number = 0
        while (line := await lines.get()) is not None:
            text = line.strip()
            if not text:
                self._prompt()
                continue
            number += 1
            message = IncomingMessage(
                channel=CHANNEL,
                chat_id=self.account,
                sender=self.account,
                platform_message_id=f"{self.session}-{number}",
                text=text,
            )
            try:
                await inbox.put(message)
            except NoRoom as exc:  # nothing was taken: say so, the person can ask again once there is room
                self.stdout.write(f"confide> Not taken: the disk is nearly full ({exc}). Free some space and ask "
                                  "again.\n\n")  # fmt: skip
                self._prompt()
        while not await self.is_idle():  # noqa: ASYNC110 - idleness lives in the database, not in an event
            await asyncio.sleep(0.1)
        self.finished.set()

    def _read(self, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
        for line in self.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    async def deliver(self, reply: OutgoingReply) -> str | None:
        text = reply.render_plain()
        for number, image in enumerate(reply.images):
            where = await asyncio.to_thread(self._write, reply.reply_id, number, image) if self.files else None
            text += f"\n\n[{image.alt}" + (f": {where}]" if where else "]")
        self.stdout.write(f"confide> {text}\n\n")
        self.stdout.flush()
        self._prompt()
        return reply.reply_id

    def _write(self, reply_id: str, number: int, image: Image) -> Path:
        """The file of one picture, named by its reply: a reply delivered again rewrites the same file."""
        assert self.files is not None
        self.files.mkdir(parents=True, exist_ok=True)
        path = self.files / f"{reply_id[:8]}-{number}-{Path(image.name).name}"
        path.write_bytes(image.data)
        return path

    async def show_partial(self, message: IncomingMessage, text: str, edit_token: str | None) -> str | None:
        return None

    async def typing(self, message: IncomingMessage) -> None:
        if self.interactive:
            self.stdout.write("(thinking…)\n")
            self.stdout.flush()

    def _prompt(self) -> None:
        if self.interactive:
            self.stdout.write("you> ")
            self.stdout.flush()


def build_adapter(settings: Settings) -> ConsoleAdapter:
    return ConsoleAdapter(section(settings, CHANNEL, ConsoleSettings).account, files=settings.data_dir / "charts")


# Never run by `confide serve`: `confide chat` builds it for the terminal it runs in.
PLATFORM = Platform(name=CHANNEL, settings=ConsoleSettings, build=build_adapter)
