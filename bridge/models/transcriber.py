"""Voice notes into text: beside the embedder, the same shape. An import whose records name an audio file it holds
(`audio`, a WhatsApp zip's voice notes) has each new one transcribed before it is embedded; records
already stored are never sent again (bridge/history/ingest.py asks the index first), so a second import transcribes
nothing and an interrupted one goes on where it stopped.
"""

from __future__ import annotations

import asyncio
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

    def audio_bytes(self) -> int:
        """The size of all the voice notes and audio files it holds: what a progress bar of the import counts."""


class OpenAITranscriber:
    """An OpenAI-compatible /v1/audio/transcriptions endpoint (vLLM serving a Whisper model)."""

    def __init__(self, settings: TranscriberSettings, proxy: str | None = None) -> None:
        from openai import AsyncOpenAI

        from bridge.models.llm import openai_http_client

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


# (bytes of a voice note read, its length in seconds where its container says): for a progress bar
Heard = Callable[[int, float | None], None]


def ogg_seconds(data: bytes) -> float | None:
    """The length of an Ogg Opus or Vorbis file (WhatsApp's and Telegram's voice notes) from the granule position
    of its last page; None for anything else."""
    if not data.startswith(b"OggS") or len(data) < 64:
        return None
    # The last page of this stream (its serial number): "OggS" may also occur inside the audio itself.
    serial, last = data[14:18], data.rfind(b"OggS")
    while last > 0 and (data[last + 4 : last + 5] != b"\0" or data[last + 14 : last + 18] != serial):
        last = data.rfind(b"OggS", 0, last)
    granule = int.from_bytes(data[last + 6 : last + 14], "little", signed=True)
    packet = data[27 + data[26] :][:32]  # after the first page's header and segment table: the codec's header
    if packet.startswith(b"OpusHead"):
        rate, skip = 48000, int.from_bytes(packet[10:12], "little")  # Opus counts 48 kHz samples, less pre-skip
    elif packet.startswith(b"\x01vorbis"):
        rate, skip = int.from_bytes(packet[12:16], "little"), 0
    else:
        return None
    return max(0, granule - skip) / rate if granule > 0 and rate > 0 else None


def voice_notes(transcriber: Transcriber, source: HoldsAudio, max_bytes: int, heard: Heard | None = None) -> Transcribe:
    """What bridge.history.ingest calls for each new record that names an audio file: the record's text becomes what was
    said, marked as transcribed; a file that cannot be read or transcribed leaves the record as it was and
    returns why (a problem of the import, which goes on)."""

    async def transcribe(record: HistoryRecord) -> str | None:
        name = str(record.audio)
        try:
            audio = await asyncio.to_thread(source.read_audio, name, max_bytes)  # a zip member: off the loop
            if heard is not None:
                heard(len(audio), ogg_seconds(audio))
            said = await transcriber.transcribe(name, audio)
        except ValueError as exc:
            return f"{name}: not transcribed ({exc})"
        except Exception as exc:  # the endpoint failed: the note stays a "sent a voice message" record
            log.warning("transcribing %s failed: %s", name, exc, exc_info=True)
            return f"{name}: not transcribed ({type(exc).__name__}: {exc})"
        if said:
            record.text = f"{record.text}, transcribed: {said}"
            record.transcribed = True
        return None

    return transcribe
