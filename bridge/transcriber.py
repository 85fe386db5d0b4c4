"""Voice notes into text: beside the embedder, the same shape. An import whose records name an audio file it holds
(`extra["audio"]`, a WhatsApp zip's voice notes) has each new one transcribed before it is embedded; records
already stored are never sent again (bridge/ingest.py asks the index first), so a second import transcribes
nothing and an interrupted one goes on where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from bridge.config import TranscriberSettings
from bridge.messages import HistoryRecord

log = logging.getLogger(__name__)


class Transcriber(Protocol):
    async def transcribe(self, name: str, audio: bytes) -> str: ...
    async def close(self) -> None: ...


@runtime_checkable
class HoldsAudio(Protocol):
    """An importer that can hand over the audio files its records name (optional)."""

    def read_audio(self, name: str, limit: int) -> bytes:
        """The file's bytes; raises ValueError when it is missing, unreadable or over `limit` bytes."""


class OpenAITranscriber:
    """An OpenAI-compatible /v1/audio/transcriptions endpoint (vLLM serving a Whisper model)."""

    def __init__(self, settings: TranscriberSettings, proxy: str | None = None) -> None:
        from openai import AsyncOpenAI

        from bridge.llm import openai_http_client

        assert settings.base_url is not None
        self._client = AsyncOpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key.get_secret_value(),
            timeout=settings.timeout_s,
            max_retries=2,
            http_client=openai_http_client(proxy),
        )
        self.model = settings.model
        self.language = settings.language

    async def transcribe(self, name: str, audio: bytes) -> str:
        from openai import omit

        result = await self._client.audio.transcriptions.create(
            model=self.model, file=(name, audio), language=self.language or omit
        )
        return result.text.strip()

    async def close(self) -> None:
        await self._client.close()


def build_transcriber(settings: TranscriberSettings, proxy: str | None = None) -> Transcriber | None:
    return OpenAITranscriber(settings, proxy) if settings.backend == "openai" else None


Transcribe = Callable[[HistoryRecord], Awaitable[str | None]]


def voice_notes(transcriber: Transcriber, source: HoldsAudio, max_bytes: int) -> Transcribe:
    """What bridge.ingest calls for each new record that names an audio file: the record's text becomes what was
    said, marked as transcribed; a file that cannot be read or transcribed leaves the record as it was and
    returns why (a problem of the import, which goes on)."""

    async def transcribe(record: HistoryRecord) -> str | None:
        name = str(record.extra["audio"])
        try:
            audio = source.read_audio(name, max_bytes)
            said = await transcriber.transcribe(name, audio)
        except ValueError as exc:
            return f"{name}: not transcribed ({exc})"
        except Exception as exc:  # the endpoint failed: the note stays a "sent a voice message" record
            log.warning("transcribing %s failed: %s", name, exc, exc_info=True)
            return f"{name}: not transcribed ({type(exc).__name__}: {exc})"
        if said:
            record.text = f"{record.text}, transcribed: {said}"
            record.extra["transcribed"] = True
        return None

    return transcribe
