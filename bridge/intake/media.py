"""A message that is only media (a photo, a voice note, a contact card) is still a message of the chat: the
importers keep it as a record whose text says what was sent, so "when did Anna send the photo of the boat?" finds
it (and the words around it, through its chat neighbours)."""

from __future__ import annotations

from pathlib import PurePath

# What a file is, by its extension (lower case, without the dot).
_KINDS = {
    "photo": ("jpg", "jpeg", "png", "heic", "heif", "gif", "bmp", "tif", "tiff"),
    "voice message": ("opus",),
    "audio file": ("m4a", "mp3", "ogg", "oga", "aac", "wav", "flac", "amr"),
    "video": ("mp4", "mov", "3gp", "mkv", "avi", "webm"),
    "sticker": ("webp", "tgs"),
    "contact card": ("vcf",),
    "document": ("pdf", "doc", "docx", "odt", "rtf", "txt", "xls", "xlsx", "ods", "csv", "ppt", "pptx", "odp"),
}
_BY_EXTENSION = {ext: kind for kind, extensions in _KINDS.items() for ext in extensions}
# Names an export gives media it left out, or its media types, mapped to what they are.
_HINTS = {
    "image": "photo",
    "photo": "photo",
    "video": "video",
    "video_file": "video",
    "video_message": "video message",
    "audio": "audio file",
    "audio_file": "audio file",
    "voice_message": "voice message",
    "sticker": "sticker",
    "gif": "GIF",
    "animation": "GIF",
    "contact card": "contact card",
    "document": "document",
    "file": "file",
}


def kind_of(name: str, hint: str | None = None) -> str:
    """What a sent file is: from the export's own word for it where it gives one, else from its extension.
    WhatsApp names voice notes PTT-….opus and audio files AUD-…."""
    if hint and hint.casefold() in _HINTS:
        return _HINTS[hint.casefold()]
    path = PurePath(name)
    if path.name.upper().startswith("PTT-"):
        return "voice message"
    return _BY_EXTENSION.get(path.suffix.lower().lstrip("."), "file" if path.suffix else "media file")


def describe(names: list[str], hint: str | None = None, omitted: bool = False) -> str:
    """The text of a media-only message: "sent a photo (IMG-20230512-WA0003.jpg)", a clause per file. `hint`:
    the export's word for what was sent ("image", "voice_message"); `omitted`: the export left the file out."""
    if not names:
        kind = kind_of("", hint) if hint else "media file"
        return f"sent {_article(kind)} {kind}" + (" (not included in the export)" if omitted else "")
    kinds = [kind_of(name, hint) for name in names]
    return "sent " + ", ".join(f"{_article(kind)} {kind} ({name})" for kind, name in zip(kinds, names, strict=True))


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"
