"""A voice message sent to Confide in a direct chat is a question: transcribed, then routed and answered like
text. The reply starts with what was understood, so a misheard question shows at once; the question enters the
person's history as its transcript, marked as transcribed and linked to its file.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from bridge.config import TranscriberSettings
from bridge.dispatch.at_work import now_at_work
from bridge.dispatch.inbox import Claimed, Inbox
from bridge.intake.persons import PersonDirectory
from bridge.language.catalog import N_, say
from bridge.messages import Attachment, Heard, IncomingMessage
from bridge.models.transcriber import Transcriber

log = logging.getLogger(__name__)

NOTHING_HEARD = N_("I could not make out any words in your voice message. Please say it again, or write it.")
NOT_HEARD = N_("I could not transcribe your voice message ({reason}). Please try again later, or write it.")


class NotHeard(Exception):
    """Why a voice message could not be turned into text, phrased for the person."""


def fetched_to_hear(transcriber: TranscriberSettings, mime_type: str, size: int | None) -> bool:
    """Whether an adapter fetches an audio file sent in a direct chat: only where a transcriber is set up, and
    only up to its bound (a voice message over it is told so without being fetched)."""
    if transcriber.backend == "none" or not mime_type.startswith("audio/"):
        return False
    return size is None or size <= transcriber.max_audio_bytes


def voice_of(message: IncomingMessage) -> Attachment | None:
    """The voice message a message is, if it is one: a direct message of no words and one audio file."""
    if not message.is_direct or message.text.strip() or len(message.attachments) != 1:
        return None
    [attachment] = message.attachments
    return attachment if attachment.mime_type.startswith("audio/") else None


def heard_message(message: IncomingMessage, voice: Attachment, said: str) -> IncomingMessage:
    """The message as the question it says; `heard` keeps what was understood and from which file."""
    return message.model_copy(update={"text": said, "attachments": [], "heard": Heard(text=said, file=voice.name)})


def heard_prefix(message: IncomingMessage) -> str:
    return f"🎤 “{message.heard.text}”\n\n" if message.heard is not None else ""


class Hearing:
    def __init__(self, transcriber: Transcriber, max_bytes: int) -> None:
        self.transcriber = transcriber
        self.max_bytes = max_bytes

    async def discard(self, voice: Attachment) -> None:
        """Delete the recording once it is heard: a person's voice is kept no longer than it is needed."""
        if voice.path:
            try:
                await asyncio.to_thread(_unlink, Path(voice.path))
            except OSError as exc:
                log.warning("could not delete the heard voice message %s: %s", voice.path, exc)

    async def hear(self, voice: Attachment) -> str:
        """What the voice message says; raises NotHeard when it cannot be told."""
        if voice.size is not None and voice.size > self.max_bytes:
            raise NotHeard(_too_long(voice.size, self.max_bytes))
        if not voice.path:
            raise NotHeard("the file did not reach me")
        try:
            audio = await asyncio.to_thread(_read, Path(voice.path), self.max_bytes)
        except ValueError as exc:
            raise NotHeard(str(exc)) from exc
        try:
            said = await self.transcriber.transcribe(voice.name, audio)
        except Exception as exc:  # the endpoint failed: the person is told, the log says why
            log.warning("transcribing %s failed: %s", voice.name, exc, exc_info=True)
            raise NotHeard("the transcription service failed") from exc
        if not said.strip():
            raise NotHeard("")
        return said.strip()


@dataclass(frozen=True)
class AfterHearing:
    """A claimed message after the hearing stage: as it now reads, and, where its voice could not be heard, what to
    tell the person instead of handling it."""

    claimed: Claimed
    refusal: str | None = None
    voice: Attachment | None = None  # the recording, until it is discarded


class HearingStage:
    """The stage between the inbox and the handler: a known person's voice message is heard here, once. Its words
    replace the message in the inbox (a retry after a crash, and an answer owed after a fallback, read the text
    instead of hearing it again) and the recording is deleted; the handler then sees a text question, nothing else."""

    def __init__(self, hearing: Hearing | None, directory: PersonDirectory, inbox: Inbox) -> None:
        self.hearing = hearing
        self.directory = directory
        self.inbox = inbox

    async def hear(self, claimed: Claimed) -> AfterHearing:
        message = claimed.message
        voice = voice_of(message) if self.hearing is not None else None
        if self.hearing is None or voice is None or self.directory.person_for(message.account) is None:
            return AfterHearing(claimed)
        await now_at_work()  # hearing is work (an endpoint's call), not waiting
        try:
            said = await self.hearing.hear(voice)
        except NotHeard as exc:
            return AfterHearing(claimed, say(NOT_HEARD, reason=exc) if str(exc) else say(NOTHING_HEARD), voice)
        message = heard_message(message, voice, said)
        await self.inbox.rewrite(claimed.inbox_id, message)
        await self.hearing.discard(voice)  # the recording is no longer needed; the words are kept
        return AfterHearing(replace(claimed, message=message))

    async def discard(self, heard: AfterHearing) -> None:
        """After the reply that it could not be heard: the person sends it again if they wish."""
        if self.hearing is not None and heard.voice is not None:
            await self.hearing.discard(heard.voice)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _read(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValueError("the file is gone") from exc
    if size > limit:
        raise ValueError(_too_long(size, limit))
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew since: refused, never cut
        raise ValueError(_too_long(len(data), limit))
    return data


def _too_long(size: int, limit: int) -> str:
    return f"it is {_amount(size)}; I take voice messages of up to {_amount(limit)}"


def _amount(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} KB" if size >= 1000 else f"{size} bytes"
