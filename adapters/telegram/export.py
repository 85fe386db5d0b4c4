"""Importer of Telegram Desktop exports (`result.json`): one chat, or a whole account with all its chats.

The file is read with `json.load`: Telegram Desktop writes text-only exports of a few hundred MB at most (media
goes to separate files), which fits in memory; the records themselves are still yielded one at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.importers.base import Problem, WrongKind, stable_id, text_head
from bridge.messages import HistoryRecord

_KEYS = re.compile(r'"(?:messages|chats|personal_information|left_chats)"\s*:')
_NOT_INCLUDED = "(File not included"


class TelegramImporter:
    kind = "telegram"
    chat = True
    detect_order = 20
    summary = "Import a Telegram Desktop export in JSON."
    path_help = "result.json of a Telegram Desktop export (one chat or all)"
    options: Mapping[str, str] = {}

    def __init__(self, path: Path, person: str) -> None:
        # Telegram Desktop saves `result.json` in a folder like "ChatExport_2023-12-31"; both may be given.
        self.path = path / "result.json" if path.is_dir() else path
        self.person = person
        label = f"{self.path.parent.name}/{self.path.name}" if self.path.name == "result.json" else self.path.name
        self.source = f"telegram:{label}"

    def check(self) -> None:
        if not self.path.is_file():
            raise WrongKind(f"{self.path} is not a Telegram Desktop export (no result.json there)")
        head = text_head(self.path)
        if not head.startswith("{") or not _KEYS.search(head):
            raise WrongKind(
                f"{self.path.name} is not a Telegram Desktop export: expected the JSON of "
                "'Export chat history' or 'Export Telegram data' (with \"messages\" or \"chats\")"
            )

    def items(self) -> Iterator[HistoryRecord | Problem]:
        self.check()
        try:
            with self.path.open(encoding="utf-8-sig") as file:
                data = json.load(file)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            yield Problem(self.path.name, f"not valid JSON: {exc}")
            return
        chats = _chats(data)
        if chats is None:
            yield Problem(self.path.name, 'neither a chat ("messages") nor an account export ("chats")')
            return
        for chat in chats:
            yield from self._chat(chat)

    def _chat(self, chat: Any) -> Iterator[HistoryRecord | Problem]:
        if not isinstance(chat, dict) or not isinstance(chat.get("messages", []), list):
            yield Problem(self.path.name, f"a chat that is not an object with a message list: {str(chat)[:80]}")
            return
        name = _chat_name(chat)
        for index, message in enumerate(chat.get("messages", []), start=1):
            number = message.get("id", index) if isinstance(message, dict) else index
            try:
                record = self._record(chat, name, message)
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                yield Problem(f"{self.path.name} chat {name!r} message {number}", f"unreadable message: {exc!r}")
                continue
            if record is not None:
                yield record

    def _record(self, chat: dict[str, Any], name: str, message: dict[str, Any]) -> HistoryRecord | None:
        if message.get("type", "message") != "message":
            return None  # "service": joins, pins, calls, title changes; not something the person said
        text, links = _plain(message.get("text", ""))
        attachments, omitted = _attachments(message)
        text = "\n".join(p for p in (text, _poll(message.get("poll"))) if p)
        chat_id = chat.get("id", name)
        extra: dict[str, Any] = {"chat_id": chat_id, "chat_type": chat.get("type", ""), "message_id": message["id"]}
        for key, field in (("reply_to_message_id", "reply_to"), ("forwarded_from", "forwarded_from")):
            if message.get(key) is not None:
                extra[field] = message[key]
        if links:
            extra["links"] = links
        if attachments:
            extra["attachments"] = attachments
        if omitted:
            extra["media_omitted"] = True
        if message.get("sticker_emoji"):
            extra["sticker"] = message["sticker_emoji"]
        if message.get("edited") or message.get("edited_unixtime"):
            extra["edited"] = True
        return HistoryRecord(
            id=stable_id("telegram", chat_id, message["id"]),
            person=self.person,
            channel="telegram",
            conversation=name,
            author=_author(message),
            time=_time(message),
            text=text,
            source=self.source,
            link=f"{chat_id}/{message['id']}",
            extra=extra,
        )


def _chats(data: Any) -> list[Any] | None:
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("chats"), dict):
        left = data["left_chats"] if isinstance(data.get("left_chats"), dict) else {}
        return [*data["chats"].get("list", []), *left.get("list", [])]
    if isinstance(data.get("messages"), list):
        return [data]
    return None


def _chat_name(chat: dict[str, Any]) -> str:
    if chat.get("name"):
        return str(chat["name"])
    if chat.get("type") == "saved_messages":
        return "Saved Messages"
    return f"chat {chat.get('id', '?')}"  # a deleted account's chat has no name


def _author(message: dict[str, Any]) -> str:
    return str(message.get("from") or message.get("from_id") or "Deleted Account")


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


def _poll(poll: Any) -> str:
    if not isinstance(poll, dict):
        return ""
    answers = [str(a.get("text", "")) for a in poll.get("answers", []) if isinstance(a, dict)]
    return f"Poll: {poll.get('question', '')}" + (f" ({' / '.join(answers)})" if answers else "")
