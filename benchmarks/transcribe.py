"""Voice notes into text: real-time factor and word error rate of the configured transcription endpoint.

    .venv/bin/python benchmarks/transcribe.py [--base-url URL] [--model NAME] [--voice en-us] [--keep DIR]

A spoken set the project makes itself: the sentences below, spoken by espeak-ng and encoded as Ogg Opus at 24
kbit/s mono (as a WhatsApp or Telegram voice note is), then sent one at a time through Confide's own transcriber
(bridge/models/transcriber.py, `openai`: an OpenAI-compatible /v1/audio/transcriptions such as vLLM serving Whisper on
the GPU host). The endpoint comes from --base-url/--model or CONFIDE_TRANSCRIBER__BASE_URL/__MODEL. Needs
`apt-get install espeak-ng opus-tools`.

Printed (figures, not a test): audio seconds, transcription seconds, the real-time factor (transcription time
over audio time, lower is faster) and the word error rate (word-level edit distance over the reference words,
both lower-cased without punctuation), overall and for the worst note. There is no local backend (no Whisper
weights install offline), so this measures whatever endpoint it is given; a synthetic voice is easier than a
person in a noisy kitchen, so the WER is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.config import TranscriberSettings
from bridge.models.transcriber import OpenAITranscriber, ogg_seconds

SENTENCES = [
    "The spare key for the boat is in the red toolbox.",
    "Dinner at grandma's is on Sunday at seven, bring the salad.",
    "The plumber comes on Thursday morning between eight and ten.",
    "The wifi password at the cabin is pine cone nineteen eighty seven.",
    "Can you pick up the kids from school today? I am stuck in a meeting.",
    "My new phone number ends with four seven one one.",
    "The dentist moved my appointment to the twelfth of March.",
    "We parked the car on level three, next to the blue pillar.",
    "Remember to water the tomatoes while we are away.",
    "The train to Bergen leaves at nine fifteen from platform four.",
    "I left the passports in the top drawer of the desk.",
    "Ben's birthday party is at the boat club on Saturday.",
]


def spoken(text: str, folder: Path, number: int, voice: str) -> Path:
    """The sentence as a voice note: espeak-ng to WAV, opusenc to Ogg Opus (24 kbit/s, speech tuned)."""
    wav, opus = folder / f"note-{number:02d}.wav", folder / f"note-{number:02d}.opus"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "155", "-w", str(wav), text], check=True, capture_output=True)
    subprocess.run(
        ["opusenc", "--quiet", "--bitrate", "24", "--downmix-mono", str(wav), str(opus)], check=True,
        capture_output=True,
    )  # fmt: skip
    return opus


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def errors(reference: list[str], heard: list[str]) -> int:
    """Word-level edit distance (substitutions, insertions, deletions)."""
    row = list(range(len(heard) + 1))
    for i, word in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(heard, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1]


async def run(settings: TranscriberSettings, voice: str, keep: Path | None) -> None:
    for tool in ("espeak-ng", "opusenc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install espeak-ng opus-tools")
    folder = keep or Path(tempfile.mkdtemp(prefix="confide-transcribe-"))
    folder.mkdir(parents=True, exist_ok=True)
    notes = [spoken(text, folder, n, voice) for n, text in enumerate(SENTENCES)]
    transcriber = OpenAITranscriber(settings)
    audio_s = spent_s = 0.0
    total_errors = total_words = 0
    worst = (0.0, "", "")
    try:
        await transcriber.transcribe(notes[0].name, notes[0].read_bytes())  # warm-up, not counted
        for note, text in zip(notes, SENTENCES, strict=True):
            data = note.read_bytes()
            seconds = ogg_seconds(data) or 0.0
            started = time.perf_counter()
            heard = await transcriber.transcribe(note.name, data)
            spent_s += time.perf_counter() - started
            audio_s += seconds
            wrong, reference = errors(words(text), words(heard)), words(text)
            total_errors, total_words = total_errors + wrong, total_words + len(reference)
            if wrong / len(reference) > worst[0]:
                worst = (wrong / len(reference), text, heard)
            print(f"{seconds:5.1f} s  {wrong}/{len(reference)} wrong  {heard!r}")
    finally:
        await transcriber.close()
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(
        f"transcribe: {len(notes)} notes, {audio_s:.1f} s of audio in {spent_s:.1f} s, RTF {spent_s / audio_s:.3f}, "
        f"WER {100 * total_errors / total_words:.1f}% ({settings.model} at {settings.base_url})"
    )
    if worst[0] > 0:
        print(f"worst note: {100 * worst[0]:.0f}% wrong: said {worst[1]!r}, heard {worst[2]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", default=os.environ.get("CONFIDE_TRANSCRIBER__BASE_URL"))
    parser.add_argument("--model", default=os.environ.get("CONFIDE_TRANSCRIBER__MODEL", "openai/whisper-large-v3"))
    parser.add_argument("--voice", default="en-us", help="espeak-ng voice")
    parser.add_argument("--keep", type=Path, help="keep the spoken set in this folder")
    args = parser.parse_args()
    if not args.base_url:
        raise SystemExit(
            "No transcription endpoint: give --base-url (or CONFIDE_TRANSCRIBER__BASE_URL), e.g. vLLM serving a "
            "Whisper model. There is no local backend (no Whisper weights install offline; see the README)."
        )
    settings = TranscriberSettings(backend="openai", base_url=args.base_url, model=args.model, timeout_s=120)
    asyncio.run(run(settings, args.voice, args.keep))


if __name__ == "__main__":
    main()
