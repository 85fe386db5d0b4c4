"""What a media-only message says it sent: by the export's own word for it, else by the file's name."""

from __future__ import annotations

import pytest

from bridge.intake import media
from bridge.intake.media import describe
from bridge.language.catalog import say, speaking


@pytest.mark.parametrize(
    ("names", "hint", "omitted", "text"),
    [
        (["PTT-20240102-WA0004.opus"], None, False, "sent a voice message (PTT-20240102-WA0004.opus)"),
        (["AUD-20240102-WA0005.m4a"], None, False, "sent an audio file (AUD-20240102-WA0005.m4a)"),
        (["00000012-PHOTO-2023-12-31-21-07-00.jpg"], None, False,
         "sent a photo (00000012-PHOTO-2023-12-31-21-07-00.jpg)"),
        (["Anna.vcf", "VID-1.mp4"], None, False, "sent a contact card (Anna.vcf), a video (VID-1.mp4)"),
        (["voice.ogg"], "voice_message", False, "sent a voice message (voice.ogg)"),
        (["floor-plan.pdf"], None, True, "sent a document (floor-plan.pdf)"),
        ([], "image", True, "sent a photo (not included in the export)"),
        ([], "Contact card", True, "sent a contact card (not included in the export)"),
        ([], None, True, "sent a media file (not included in the export)"),
        (["notes"], None, False, "sent a media file (notes)"),
    ],
)  # fmt: skip
def test_describe(names: list[str], hint: str | None, omitted: bool, text: str) -> None:
    assert describe(names, hint, omitted) == text


@pytest.mark.parametrize(
    ("names", "hint", "omitted", "language", "text"),
    [
        (["IMG-1.jpg", "PTT-2.opus"], None, False, "it",
         "ha inviato una foto (IMG-1.jpg), un messaggio vocale (PTT-2.opus)"),
        ([], "sticker", True, "de", "schickte einen Sticker (nicht im Export enthalten)"),
        (["Anna.vcf"], None, False, "fr", "a envoyé une fiche contact (Anna.vcf)"),
        (["AUD-1.m4a"], None, False, "es", "envió un archivo de audio (AUD-1.m4a)"),
        ([], None, True, "nl", "stuurde een mediabestand (niet in de export opgenomen)"),
        (["IMG-1.jpg"], None, False, "pt", "sent a photo (IMG-1.jpg)"),  # a language Confide does not speak
        (["IMG-1.jpg"], None, False, "en", "sent a photo (IMG-1.jpg)"),
    ],
)  # fmt: skip
def test_describe_in_the_messages_language(
    names: list[str], hint: str | None, omitted: bool, language: str, text: str
) -> None:
    assert describe(names, hint, omitted, language) == text


def test_a_live_message_is_described_in_english_whatever_the_reply_is_in() -> None:
    """Adapters and the /import of a photo describe without a language: history stays as it was written."""
    with speaking("de"):
        assert describe(["IMG-1.jpg"]) == "sent a photo (IMG-1.jpg)"
        assert describe(["IMG-1.jpg"], language="it") == "ha inviato una foto (IMG-1.jpg)"
        assert say("Cancelled; nothing was deleted.") != "Cancelled; nothing was deleted.", "German again after"


def test_every_kind_is_said_in_every_language() -> None:
    """Each kind `kind_of` can name has its words to translate (tests/test_catalogs.py checks they are)."""
    kinds = {*media._KINDS, *media._HINTS.values(), "voice message", "file", "media file"}
    assert kinds <= set(media._SENT_KINDS), kinds - set(media._SENT_KINDS)
    for language in ("it", "de", "fr", "es", "nl"):
        said = [describe([], hint, False, language) for hint in media._HINTS]
        assert not [text for text in said if "sent" in text], language
