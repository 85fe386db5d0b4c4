"""Importer of Telegram Desktop exports (`result.json`): one chat, or a whole account with all its chats.

The file is read with `json.load`: Telegram Desktop writes text-only exports of a few hundred MB at most (media
goes to separate files), which fits in memory; the records themselves are still yielded one at a time. Its size
and nesting are checked on the bytes before parsing, and every field is read as if it could have any type.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import reprlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

from bridge.config import ImportSettings
from bridge.history.importers.base import (
    READ_ERRORS,
    CheckedOnce,
    Problem,
    WrongKind,
    cut_problem,
    describe,
    guarded,
    import_limits,
    stable_id,
    text_head,
)
from bridge.intake import media
from bridge.messages import HistoryRecord

_KEYS = re.compile(r'"(?:messages|chats|personal_information|left_chats)"\s*:')
_NOT_INCLUDED = "(File not included"
# A JSON string, possessive so that a long one costs no backtracking; what is left are the structure's bytes.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_DEPTH_STEP = [0] * 256
for _open, _close in (b"[]", b"{}"):
    _DEPTH_STEP[_open], _DEPTH_STEP[_close] = 1, -1
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
INT_DIGITS = 4000  # a longer number is kept as its text: int() refuses over 4300 digits, and is quadratic
NAME_CHARS = 1000  # names, ids and other fields kept in `extra`: short in any real export


def _short_repr() -> reprlib.Repr:
    """A repr of at most a few dozen characters whatever it is given (a chat of a million messages)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlist, short.maxdict = 3, 80, 80, 4, 4
    return short


_brief = _short_repr().repr


class TelegramImporter(CheckedOnce):
    kind = "telegram"
    chat = True
    detect_order = 20
    summary = "Import a Telegram Desktop export in JSON."
    path_help = "result.json of a Telegram Desktop export (one chat or all)"
    options: Mapping[str, str] = {}

    def __init__(self, path: Path, person: str, limits: ImportSettings | None = None) -> None:
        # Telegram Desktop saves `result.json` in a folder like "ChatExport_2023-12-31"; both may be given.
        self.path = path / "result.json" if path.is_dir() else path
        self.person = person
        self.limits = import_limits(limits)
        label = f"{self.path.parent.name}/{self.path.name}" if self.path.name == "result.json" else self.path.name
        self.source = f"telegram:{label}"

    def sniff(self) -> None:
        if not self.path.is_file():
            raise WrongKind(f"{self.path} is not a Telegram Desktop export (no result.json there)")
        head = text_head(self.path)
        if not head.startswith("{") or not _KEYS.search(head):
            raise WrongKind(
                f"{self.path.name} is not a Telegram Desktop export: expected the JSON of "
                "'Export chat history' or 'Export Telegram data' (with \"messages\" or \"chats\")"
            )

    def items(self) -> Iterator[HistoryRecord | Problem]:
        self.ensure_checked()
        yield from guarded(self._items(), self.path.name)

    def _items(self) -> Iterator[HistoryRecord | Problem]:
        try:
            data = self._load()
        except _Unloadable as exc:
            yield Problem(self.path.name, str(exc))
            return
        chats = _chats(data)
        if chats is None:
            yield Problem(self.path.name, 'neither a chat ("messages") nor an account export ("chats")')
            return
        for chat in chats:
            yield from self._chat(chat)

    # -- voice messages (bridge/models/transcriber.py) ---------------------------------------------------------------

    def _audio_file(self, message: dict[str, Any]) -> str | None:
        """The export's own copy of a voice message or audio file ("voice_messages/audio_1@….ogg"), if it holds
        one: a relative path inside the export folder, never anywhere else."""
        file, kind = message.get("file"), message.get("media_type")
        if not isinstance(file, str) or file.startswith(_NOT_INCLUDED) or kind not in ("voice_message", "audio_file"):
            return None
        return file if self._inside_export(file) is not None else None

    def _inside_export(self, name: str) -> Path | None:
        folder = self.path.parent.resolve()
        try:
            found = (folder / name).resolve()
            return found if found.is_relative_to(folder) and found.is_file() else None
        except (OSError, RuntimeError, ValueError):  # a name too long, with a NUL, or a link loop
            return None

    def audio_bytes(self) -> int:
        """The voice messages and audio files in the export folder (Telegram Desktop puts them beside the JSON)."""
        total = 0
        try:
            # A folder of the export's size; the cap keeps a result.json put in a big folder from a long walk.
            for path in itertools.islice(self.path.parent.rglob("*"), 200_000):
                if media.kind_of(path.name) in ("voice message", "audio file") and path.is_file():
                    total += path.stat().st_size
        except OSError:
            return total
        return total

    def read_audio(self, name: str, limit: int) -> bytes:
        found = self._inside_export(name)
        if found is None:
            raise ValueError("not in the export folder")
        try:
            with found.open("rb") as file:
                data = file.read(limit + 1)
        except OSError as exc:
            raise ValueError(f"cannot be read ({describe(exc)})") from None
        if len(data) > limit:
            raise ValueError(f"over CONFIDE_TRANSCRIBER__MAX_AUDIO_BYTES ({limit} bytes)")
        return data

    def _load(self) -> Any:
        """The parsed export; raises `_Unloadable` (why, for a `Problem`) when it is too big, too deep or not JSON."""
        bounds = self.limits
        try:
            size = self.path.stat().st_size
            if size > bounds.max_file_bytes:
                raise _Unloadable(f"{size:,} bytes: over CONFIDE_IMPORTS__MAX_FILE_BYTES ({bounds.max_file_bytes:,})")
            with self.path.open("rb") as file:
                data = file.read(bounds.max_file_bytes + 1)
            if len(data) > bounds.max_file_bytes:
                raise _Unloadable(f"over CONFIDE_IMPORTS__MAX_FILE_BYTES ({bounds.max_file_bytes:,} bytes)")
            depth = json_depth(data, enough=bounds.max_json_depth)
            if depth > bounds.max_json_depth:
                raise _Unloadable(
                    f"nested {depth} deep (at most {bounds.max_json_depth}: CONFIDE_IMPORTS__MAX_JSON_DEPTH)"
                )
            return json.loads(data.decode("utf-8-sig"), parse_int=_int)
        except (ValueError, RecursionError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise _Unloadable(f"not valid JSON: {describe(exc)}") from None

    def _chat(self, chat: Any) -> Iterator[HistoryRecord | Problem]:
        if not isinstance(chat, dict) or not isinstance(chat.get("messages", []), list):
            yield Problem(self.path.name, f"a chat that is not an object with a message list: {_brief(chat)}")
            return
        name = _chat_name(chat)
        for index, message in enumerate(chat.get("messages", []), start=1):
            number = _brief(message.get("id", index)) if isinstance(message, dict) else index
            where = f"{self.path.name} chat {name!r} message {number}"
            try:
                record = self._record(chat, name, message)
            except READ_ERRORS as exc:
                yield Problem(where, f"unreadable message: {describe(exc)}")
                continue
            if record is None:
                continue
            if len(record.text) > (limit := self.limits.max_message_chars):
                yield cut_problem(where, "a message", len(record.text), limit, "max_message_chars")
                record.text = record.text[:limit]
            yield record

    def _record(self, chat: dict[str, Any], name: str, message: dict[str, Any]) -> HistoryRecord | None:
        if message.get("type", "message") != "message":
            return None  # "service": joins, pins, calls, title changes; not something the person said
        text, links = _plain(message.get("text", ""))
        attachments, omitted = _attachments(message)
        text = "\n".join(p for p in (text, _poll(message.get("poll"))) if p)
        chat_id = _scalar(chat.get("id", name))
        message_id = _scalar(message["id"])
        extra: dict[str, Any] = {
            "chat_id": chat_id,
            "chat_type": _scalar(chat.get("type", "")),
            "message_id": message_id,
        }
        for key, field in (("reply_to_message_id", "reply_to"), ("forwarded_from", "forwarded_from")):
            if message.get(key) is not None:
                extra[field] = _scalar(message[key])
        if links:
            extra["links"] = links
        if attachments:
            extra["attachments"] = attachments
        if omitted:
            extra["media_omitted"] = True
        if message.get("sticker_emoji"):
            extra["sticker"] = _scalar(message["sticker_emoji"])
        if message.get("edited") or message.get("edited_unixtime"):
            extra["edited"] = True
        if not text:
            text = _shared(message)
        if not text and (attachments or omitted or message.get("media_type")):  # media only: said in words
            hint = message.get("media_type") or ("photo" if message.get("photo") else None)
            hint = hint if isinstance(hint, str) else None
            # A sticker's file name says nothing, its emoji does; a file left out is named only by its kind.
            named = [name for name in attachments if Path(name).suffix and hint != "sticker"]
            text = media.describe(named, hint, omitted)
            if message.get("sticker_emoji"):
                text += f" {extra['sticker']}"
            extra["media"] = True
        return HistoryRecord(
            id=stable_id("telegram", chat_id, message_id),
            person=self.person,
            channel="telegram",
            conversation=name,
            author=_author(message),
            time=_time(message),
            text=text,
            source=self.source,
            link=f"{chat_id}/{message_id}",
            audio=self._audio_file(message),  # a voice message the export holds: transcribed on import
            extra=extra,
        )


class _Unloadable(Exception):
    """Why an export cannot be read at all."""


def json_depth(data: bytes, enough: int = 0) -> int:
    """How deep a JSON document nests, counted on its bytes before it is parsed: the parser would recurse once
    per level, past Python's limit. Brackets inside strings are counted first (fast, and never less than the
    truth); only when that exceeds `enough` are strings skipped (a regex: about 25 MB/s)."""
    rough = _depth(data.translate(None, _NOT_BRACKETS))
    return rough if rough <= enough else _depth(_JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS))


def _depth(brackets: bytes) -> int:
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _int(text: str) -> int | str:
    return int(text) if len(text) <= INT_DIGITS else text


def _scalar(value: Any) -> str | int | float | bool | None:
    """A field as the index stores it: a JSON scalar as it is (ints within 64 bits), anything else (a list, an
    object, a huge number) as short text: a payload the store can always write."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return value[:NAME_CHARS] if isinstance(value, str) else _brief(value)


def _name(value: Any) -> str:
    return value[:NAME_CHARS] if isinstance(value, str) else _brief(value)


def _chats(data: Any) -> list[Any] | None:
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("chats"), dict):
        left = data["left_chats"] if isinstance(data.get("left_chats"), dict) else {}
        return [*_listed(data["chats"].get("list")), *_listed(left.get("list"))]
    if isinstance(data.get("messages"), list):
        return [data]
    return None


def _listed(value: Any) -> list[Any]:
    """A "list" field's entries; anything else there is one entry, reported as a chat that is not one."""
    return value if isinstance(value, list) else [] if value is None else [value]


def _chat_name(chat: dict[str, Any]) -> str:
    if chat.get("name"):
        return _name(chat["name"])
    if chat.get("type") == "saved_messages":
        return "Saved Messages"
    return f"chat {_brief(chat.get('id', '?'))}"  # a deleted account's chat has no name


def _author(message: dict[str, Any]) -> str:
    return _name(message.get("from") or message.get("from_id") or "Deleted Account")


def _time(message: dict[str, Any]) -> datetime:
    if message.get("date_unixtime"):
        return datetime.fromtimestamp(int(message["date_unixtime"]), UTC)
    # Older exports have only "date", in the exporting computer's local time without a zone: stored as UTC.
    return datetime.fromisoformat(message["date"]).replace(tzinfo=UTC)


def _plain(text: Any) -> tuple[str, list[str]]:
    """The text of a message, which Telegram gives as a string or as a list of strings and entity objects."""
    if isinstance(text, str):
        return text, []
    if not isinstance(text, list):
        raise TypeError(f"text is a {type(text).__name__}")
    pieces: list[str] = []
    links: list[str] = []
    for piece in text:
        if isinstance(piece, str):
            pieces.append(piece)
            continue
        pieces.append(str(piece.get("text", "")))
        if piece.get("type") == "text_link" and piece.get("href"):
            links.append(str(piece["href"]))
        elif piece.get("type") == "link":
            links.append(str(piece.get("text", "")))
    return "".join(pieces), links


def _attachments(message: dict[str, Any]) -> tuple[list[str], bool]:
    """Names of the files a message carried, and whether the export left any of them out."""
    names: list[str] = []
    omitted = False
    for key in ("file", "photo"):
        value = message.get(key)
        if not isinstance(value, str) or not value:
            continue
        if value.startswith(_NOT_INCLUDED):
            omitted = True
            names.append(str(message.get("file_name") or message.get("media_type") or key))
        else:
            names.append(str(message.get("file_name") or Path(value).name) if key == "file" else Path(value).name)
    return names, omitted


def _shared(message: dict[str, Any]) -> str:
    """A contact or a location sent without words, said in words ("" for anything else)."""
    contact, place = message.get("contact_information"), message.get("location_information")
    if isinstance(contact, dict):
        name = " ".join(str(contact.get(k) or "") for k in ("first_name", "last_name")).strip()
        return f"sent a contact card ({name})" if name else "sent a contact card"
    if isinstance(place, dict) and {"latitude", "longitude"} <= place.keys():
        return f"shared a location ({_scalar(place['latitude'])}, {_scalar(place['longitude'])})"
    return ""


def _poll(poll: Any) -> str:
    if not isinstance(poll, dict):
        return ""
    answers = [str(a.get("text", "")) for a in poll.get("answers", []) if isinstance(a, dict)]
    return f"Poll: {poll.get('question', '')}" + (f" ({' / '.join(answers)})" if answers else "")
