"""A message that is only media (a photo, a voice note, a contact card) is still a message of the chat: the
importers keep it as a record whose text says what was sent, so "when did Anna send the photo of the boat?" finds
it (and the words around it, through its chat neighbours).

The description is English unless the caller knows the message's language: an importer that reads it off the
export's own words ("<Media omessi>": Italian) describes the media in it, where it is one Confide speaks
(bridge/language/catalog.py). The kinds `kind_of` returns stay English: they are names, not texts.
"""

from __future__ import annotations

from pathlib import PurePath

from bridge.language.catalog import N_, say, speaking

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


# Each kind as the object of "sent", with its article: a language chooses the article by the kind's gender, and
# German by its case too ("schickte einen Sticker").
_SENT_KINDS = {
    "photo": N_("a photo"),
    "voice message": N_("a voice message"),
    "audio file": N_("an audio file"),
    "video": N_("a video"),
    "video message": N_("a video message"),
    "sticker": N_("a sticker"),
    "GIF": N_("a GIF"),
    "contact card": N_("a contact card"),
    "document": N_("a document"),
    "file": N_("a file"),
    "media file": N_("a media file"),
}
SENT = N_("sent {items}")
LEFT_OUT = N_("{kind} (not included in the export)")


def describe(names: list[str], hint: str | None = None, omitted: bool = False, language: str | None = None) -> str:
    """The text of a media-only message: "sent a photo (IMG-20230512-WA0003.jpg)", a clause per file. `hint`:
    the export's word for what was sent ("image", "voice_message"); `omitted`: the export left the file out;
    `language`: the message's language where the caller knows it (ISO 639-1). English where Confide does not speak
    it, and for None, even while a reply in another language is being handled: history is not in the reply's."""
    with speaking(language):
        if not names:
            kind = _sent(kind_of("", hint) if hint else "media file")
            return say(SENT, items=say(LEFT_OUT, kind=kind) if omitted else kind)
        items = [f"{_sent(kind_of(name, hint))} ({name})" for name in names]
        return say(SENT, items=", ".join(items))


def _sent(kind: str) -> str:
    return say(_SENT_KINDS[kind]) if kind in _SENT_KINDS else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
