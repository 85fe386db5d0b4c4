"""An inbox for testing an adapter alone: it stores each message once, as the real inbox does, and can fail its
first `put`s (a full disk, a crash between receiving and storing) to show that the platform offers them again."""

from __future__ import annotations

from bridge.messages import IncomingMessage


class RecordingInbox:
    def __init__(self, failures: int = 0) -> None:
        self.messages: list[IncomingMessage] = []
        self.puts = 0
        self.failures = failures  # how many `put`s fail before the first one stores

    async def put(self, message: IncomingMessage) -> bool:
        self.puts += 1
        if self.puts <= self.failures:
            raise RuntimeError("the inbox could not store it")
        if any(m.channel == message.channel and m.platform_message_id == message.platform_message_id
               for m in self.messages):  # fmt: skip
            return False
        self.messages.append(message)
        return True

    async def wait_for_room(self) -> None:
        return None

    def has_room(self) -> bool:
        return True

    def stored(self, text: str) -> list[IncomingMessage]:
        return [m for m in self.messages if text in m.text]
