"""From a Telegram message to the core's IncomingMessage: who, where, whether the bot is addressed, media."""

from __future__ import annotations

from dataclasses import dataclass

from telegram import Message, MessageEntity

from adapters.attachments import safe_name
from bridge.messages import Attachment, IncomingMessage

CHANNEL = "telegram"


@dataclass(frozen=True)
class Media:
    """A file in a message; `download` says whether the adapter fetches it (documents are imported)."""

    file_id: str
    name: str
    mime_type: str
    size: int | None
    download: bool


def message_key(chat_id: int, message_id: int) -> str:
    # Message ids are counted per chat, so the chat is part of the id.
    return f"{chat_id}:{message_id}"


def is_addressed(message: Message, bot_id: int, username: str) -> bool:
    """A mention of @username, a text_mention of the bot, or a /command@username."""
    handle = "@" + username.lower()
    types: list[str | None] = [MessageEntity.MENTION, MessageEntity.TEXT_MENTION, MessageEntity.BOT_COMMAND]
    found = {**message.parse_entities(types), **message.parse_caption_entities(types)}
    for entity, text in found.items():
        if entity.type == MessageEntity.MENTION and text.lower() == handle:
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == bot_id:
            return True
        if entity.type == MessageEntity.BOT_COMMAND and text.lower().endswith(handle):
            return True
    return False


def media_of(message: Message) -> list[Media]:
    media: list[Media] = []
    if document := message.document:
        name = safe_name(document.file_name or f"document-{message.message_id}")
        mime = document.mime_type or "application/octet-stream"
        media.append(Media(document.file_id, name, mime, document.file_size, True))
    if message.photo:
        photo = max(message.photo, key=lambda p: p.width * p.height)
        media.append(Media(photo.file_id, f"photo-{message.message_id}.jpg", "image/jpeg", photo.file_size, False))
    if voice := message.voice:
        mime = voice.mime_type or "audio/ogg"
        media.append(Media(voice.file_id, f"voice-{message.message_id}.ogg", mime, voice.file_size, False))
    if audio := message.audio:
        name = safe_name(audio.file_name or f"audio-{message.message_id}")
        media.append(Media(audio.file_id, name, audio.mime_type or "audio/mpeg", audio.file_size, False))
    if video := message.video:
        name = safe_name(video.file_name or f"video-{message.message_id}.mp4")
        media.append(Media(video.file_id, name, video.mime_type or "video/mp4", video.file_size, False))
    return media


def to_incoming(message: Message, bot_id: int, username: str, attachments: list[Attachment]) -> IncomingMessage:
    chat = message.chat
    sender = message.from_user
    reply_to = message.reply_to_message
    thread_id = message.message_thread_id if message.is_topic_message else None
    return IncomingMessage(
        channel=CHANNEL,
        chat_id=str(chat.id),
        sender=str(sender.id) if sender else str(chat.id),
        platform_message_id=message_key(chat.id, message.message_id),
        text=message.text or message.caption or "",
        time=message.date,
        reply_to=message_key(chat.id, reply_to.message_id) if reply_to else None,
        thread_id=str(thread_id) if thread_id is not None else None,
        is_direct=chat.type == chat.PRIVATE,
        mentions_bot=is_addressed(message, bot_id, username),
        replies_to_bot=bool(reply_to and reply_to.from_user and reply_to.from_user.id == bot_id),
        from_bot_itself=bool(sender and sender.id == bot_id),
        attachments=attachments,
        extra={"chat_id": chat.id, "message_id": message.message_id, "chat_type": chat.type, "thread_id": thread_id},
    )
