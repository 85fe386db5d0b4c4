"""Importer of LoCoMo benchmark conversations (Maharana et al., ACL 2024), and their questions.

A file holds one long two-person chat in dated sessions (`session_N`, `session_N_date_time`) and `qa` pairs whose
`evidence` names turns by `dia_id`. The per-conversation files of /work/shared/datasets/locomo are read, and so is
the original `locomo10.json` (a list of `{"sample_id", "conversation", "qa"}`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.config import ImportSettings
from bridge.history.importers.base import (
    CheckedOnce,
    Problem,
    WrongKind,
    describe,
    guarded,
    import_limits,
    stable_id,
    text_head,
)
from bridge.messages import HistoryRecord

_SESSION = re.compile(r"^session_(\d+)$")
_SNIFF = re.compile(r'"(?:speaker_a|session_1|qa)"\s*:')
_DIA_ID = re.compile(r"^D:?(\d+):(\d+)$")
DATE_FORMAT = "%I:%M %p on %d %B, %Y"  # "1:56 pm on 8 May, 2023"


class LocomoImporter(CheckedOnce):
    kind = "locomo"
    chat = True
    detect_order = 10
    summary = "Import a LoCoMo benchmark conversation (the retrieval benchmark's format)."
    path_help = "A LoCoMo conversation .json"
    options: Mapping[str, str] = {}

    def __init__(self, path: Path, person: str, limits: ImportSettings | None = None) -> None:
        self.path = path
        self.person = person
        self.limits = import_limits(limits)
        self.source = f"locomo:{path.name}"

    def sniff(self) -> None:
        if not self.path.is_file():
            raise WrongKind(f"{self.path} is not a LoCoMo file")
        head = text_head(self.path)
        if not head.startswith(("{", "[")) or not _SNIFF.search(head):
            raise WrongKind(f"{self.path.name} is not a LoCoMo conversation (JSON with speaker_a, session_N, qa)")

    def items(self) -> Iterator[HistoryRecord | Problem]:
        self.ensure_checked()
        yield from guarded(self._items(), self.path.name)

    def _items(self) -> Iterator[HistoryRecord | Problem]:
        size, bound = self.path.stat().st_size, self.limits.max_file_bytes
        if size > bound:  # read whole by json.load: bounded like every file read whole
            yield Problem(self.path.name, f"{size:,} bytes: over CONFIDE_IMPORTS__MAX_FILE_BYTES ({bound:,})")
            return
        try:
            conversations = _conversations(_load(self.path))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit number
            yield Problem(self.path.name, f"not valid JSON: {describe(exc)}")
            return
        if not conversations:
            yield Problem(self.path.name, "no conversation with speaker_a and speaker_b in it")
        for sample, conversation in conversations:
            yield from self._conversation(sample, conversation)

    def _conversation(self, sample: str, conversation: dict[str, Any]) -> Iterator[HistoryRecord | Problem]:
        name = f"{conversation['speaker_a']} & {conversation['speaker_b']}"
        where = f"{self.path.name}{f' {sample}' if sample else ''}"
        sessions = sorted((int(m[1]), key) for key in conversation if (m := _SESSION.match(key)))
        for number, key in sessions:
            turns = conversation[key]
            try:
                start = datetime.strptime(str(conversation.get(f"{key}_date_time")), DATE_FORMAT)
            except ValueError as exc:
                yield Problem(f"{where} session {number}", f"unreadable session date: {exc}")
                continue
            if not isinstance(turns, list):
                yield Problem(f"{where} session {number}", "the session is not a list of turns")
                continue
            for index, turn in enumerate(turns):
                try:
                    # The dates have no zone: stored as UTC. One second per turn keeps the session's order.
                    yield self._turn(sample, name, number, turn, (start + timedelta(seconds=index)).replace(tzinfo=UTC))
                except (KeyError, TypeError, AttributeError) as exc:
                    yield Problem(f"{where} session {number} turn {index + 1}", f"not a turn: missing {exc}")

    def _turn(self, sample: str, name: str, session: int, turn: dict[str, Any], time: datetime) -> HistoryRecord:
        text = str(turn["text"])
        extra: dict[str, Any] = {"dia_id": turn["dia_id"]}
        if turn.get("blip_caption"):
            text = f"{text} [shares a photo: {turn['blip_caption']}]"
            extra["blip_caption"] = turn["blip_caption"]
        if turn.get("img_url"):
            extra["img_url"] = turn["img_url"]
        return HistoryRecord(
            id=stable_id("locomo", self.path.name, sample, turn["dia_id"]),
            person=self.person,
            channel="locomo",
            conversation=name,
            author=str(turn["speaker"]),
            time=time,
            text=text,
            source=self.source,
            link=str(turn["dia_id"]),
            session=session,
            extra=extra,
        )


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8-sig") as file:
        return json.load(file)


def _conversations(data: Any) -> list[tuple[str, dict[str, Any]]]:
    """(sample id, conversation) of each chat in a per-conversation file or in the original list file."""
    entries = data if isinstance(data, list) else [data]
    found: list[tuple[str, dict[str, Any]]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        conversation = entry.get("conversation", entry)
        if isinstance(conversation, dict) and "speaker_a" in conversation and "speaker_b" in conversation:
            found.append((str(entry.get("sample_id", "")), conversation))
    return found


def load_questions(path: Path) -> list[dict[str, Any]]:
    """The `qa` entries: question, answer, evidence (dia_ids, cleaned), category; category 5 is adversarial
    (no answer in the chat; its `adversarial_answer` is kept)."""
    data = _load(Path(path))
    entries = data if isinstance(data, list) else [data]
    questions: list[dict[str, Any]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        for qa in entry.get("qa", []):
            question: dict[str, Any] = {
                "question": qa["question"],
                "answer": qa.get("answer"),
                "evidence": normalized_evidence(qa.get("evidence", [])),
                "category": qa.get("category"),
            }
            if "adversarial_answer" in qa:
                question["adversarial_answer"] = qa["adversarial_answer"]
            if entry.get("sample_id"):
                question["sample_id"] = entry["sample_id"]
            questions.append(question)
    return questions


def normalized_evidence(evidence: list[Any]) -> list[str]:
    """dia_ids as the turns carry them: the data set has "D8:6; D9:17" in one string and "D:11:26" typos."""
    found: list[str] = []
    for item in evidence:
        for token in re.split(r"[;,\s]+", str(item)):
            if match := _DIA_ID.match(token):
                found.append(f"D{match[1]}:{match[2]}")
    return found
