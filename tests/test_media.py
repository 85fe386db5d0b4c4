"""What a media-only message says it sent: by the export's own word for it, else by the file's name."""

from __future__ import annotations

import pytest

from bridge.intake.media import describe


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
