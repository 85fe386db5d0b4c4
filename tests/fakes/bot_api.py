"""A local HTTP server that speaks the Telegram Bot API wire protocol, for tests.

Real HTTP on loopback, as python-telegram-bot 22 talks to api.telegram.org: every call a POST to
`/bot<token>/<method>` with a form body (lists and objects as JSON strings inside it) or a JSON body;
answers `{"ok": true, "result": ...}` or `{"ok": false, "error_code", "description"[, "parameters"]}`
with the matching HTTP status. getUpdates long-polls and forgets updates below the offset it is given,
as Telegram does (that is how a bot confirms). Files are served at `/file/bot<token>/<file_path>`.
A webhook, once set, gets each new update posted with the secret token, retried until it answers 200.

Test-side API: `push_message`/`push` inject updates, `bot_messages`/`calls` read what the bot did,
`fail` scripts errors (a 429 with retry_after, a parse error), `hold_downloads` stalls file downloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.loopback import serve_on_loopback

TOKEN = "123456789:AAH-fake-token-for-tests_0123456789ab"
BOT_ID = 123456789
BOT_USERNAME = "confide_bot"
HTML_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler", "span",
             "blockquote", "tg-emoji"}  # fmt: skip
MARKDOWN_V2_RESERVED = set("_*[]()~`>#+-=|{}.!")
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)


class ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.retry_after = code, description, retry_after


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float  # time.monotonic()


@dataclass
class Failure:
    method: str
    code: int
    description: str
    retry_after: int | None = None
    after: int = 0  # let this many matching calls succeed first
    times: int = 1
    only_formatted: bool = False  # only calls that set a parse_mode


@dataclass
class BotMessage:
    message_id: int
    chat_id: int
    text: str  # as shown: markup parsed away
    parse_mode: str | None
    raw: str
    reply_to: int | None = None
    edits: list[str] = field(default_factory=list)  # every text it showed, in order
    photo: bytes | None = None  # a sendPhoto's upload, as received (`text` is then its caption)


@dataclass
class FakeTelegram:
    token: str = TOKEN
    drafts_supported: bool = True
    updates: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    messages: dict[int, list[BotMessage]] = field(default_factory=dict)
    drafts: dict[int, list[str]] = field(default_factory=dict)
    commands: list[dict[str, str]] = field(default_factory=list)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # file_id -> (file_path, content)
    webhook: dict[str, Any] | None = None
    webhook_statuses: list[int] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    hold_downloads: asyncio.Event | None = None  # set: downloads wait until it is set
    download_started: asyncio.Event = field(default_factory=asyncio.Event)
    confirmed: int = 0  # highest update_id the bot confirmed through an offset
    closing: bool = False
    port: int = 0
    _update_ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _message_ids: dict[int, itertools.count] = field(default_factory=dict)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeTelegram:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner, self.port = await serve_on_loopback(app, self.port)
        return self

    async def stop(self) -> None:
        self.closing = True
        self._arrived.set()  # long polls answer now instead of holding the shutdown for their timeout
        for task in self._tasks:
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test side: updates in --------------------------------------------------------------------

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._update_ids), **update}
        self.updates.append(update)
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()
        if self.webhook is not None:
            self._spawn(self._post_until_taken(update))
        return update

    def push_message(
        self, user_id: int, text: str | None = None, chat_id: int | None = None, chat_type: str = "private",
        **fields: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """A message from a user; `fields` add to it (entities, reply_to_message, document, caption, ...)."""
        chat_id = user_id if chat_id is None else chat_id
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        chat.update({"first_name": f"User{user_id}"} if chat_type == "private" else {"title": "Family"})
        message = {
            "message_id": self._next_message_id(chat_id),
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"},
            **({"text": text} if text is not None else {}),
            **fields,
        }
        return self.push({"message": message})

    def add_file(self, name: str, content: bytes) -> str:
        # Telegram names stored files itself (documents/file_7.pdf); the sender's name is not in the path.
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = (f"documents/file_{len(self.files) + 1}{PurePosixPath(name).suffix}", content)
        return file_id

    def fail(self, method: str, code: int, description: str, **options: Any) -> None:
        self.failures.append(Failure(method, code, description, **options))

    # -- test side: what the bot did --------------------------------------------------------------

    def bot_messages(self, chat_id: int) -> list[BotMessage]:
        return list(self.messages.get(chat_id, []))

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    async def post_to_webhook(self, update: dict[str, Any], secret: str | None) -> int:
        """Post an update as Telegram would, with the given secret header (None: no header)."""
        assert self.webhook is not None, "no webhook is set"
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        async with aiohttp.ClientSession() as session:
            async with session.post(self.webhook["url"], json=update, headers=headers) as response:
                return response.status

    # -- the API ---------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(ApiError(401, "Unauthorized"))
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append(Call(method, params, time.monotonic()))
        handler: Callable[[dict[str, Any]], Any] | None = getattr(self, f"_m_{method}", None)
        if handler is None or (method == "sendMessageDraft" and not self.drafts_supported):
            return _error(ApiError(404, "Not Found"))
        try:
            self._scripted_failure(method, params)
            result = handler(params)
            if asyncio.iscoroutine(result):
                result = await result
        except ApiError as exc:
            return _error(exc)
        return web.json_response({"ok": True, "result": result})

    def _scripted_failure(self, method: str, params: dict[str, Any]) -> None:
        for failure in self.failures:
            if (
                failure.method != method
                or failure.times <= 0
                or (failure.only_formatted and not params.get("parse_mode"))
            ):
                continue
            if failure.after > 0:
                failure.after -= 1
                return
            failure.times -= 1
            raise ApiError(failure.code, failure.description, failure.retry_after)

    def _m_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"id": BOT_ID, "is_bot": True, "first_name": "Confide", "username": BOT_USERNAME,
                "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}  # fmt: skip

    def _m_setMyCommands(self, params: dict[str, Any]) -> bool:
        self.commands = _json(params["commands"])
        return True

    def _m_deleteWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = None
        return True

    def _m_setWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {"url": params["url"], "secret_token": params.get("secret_token"),
                        "max_connections": params.get("max_connections")}  # fmt: skip
        for update in self.updates:  # what waits is delivered to the new webhook
            self._spawn(self._post_until_taken(update))
        return True

    async def _m_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook is not None:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook "
                                "to delete the webhook first")  # fmt: skip
        offset, limit = int(params.get("offset") or 0), int(params.get("limit") or 100)
        if offset > 0:  # confirms every update below it: Telegram forgets them
            self.confirmed = max(self.confirmed, offset - 1)
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        while not self.updates and not self.closing and (remaining := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
            if offset > 0:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
        return self.updates[:limit]

    def _m_sendChatAction(self, params: dict[str, Any]) -> bool:
        return True

    def _m_sendMessageDraft(self, params: dict[str, Any]) -> bool:
        chat_id = int(params["chat_id"])
        if chat_id < 0:
            raise ApiError(400, "Bad Request: TEXTDRAFT_PEER_INVALID")
        text, _ = _parsed(params.get("text") or "", params.get("parse_mode"))
        self.drafts.setdefault(chat_id, []).append(text)
        return True

    def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        raw, parse_mode = str(params.get("text", "")), params.get("parse_mode")
        text, entities = _parsed(raw, parse_mode)
        reply = _json(params["reply_parameters"])["message_id"] if params.get("reply_parameters") else None
        message = BotMessage(self._next_message_id(chat_id), chat_id, text, parse_mode, raw, reply, [text])
        self.messages.setdefault(chat_id, []).append(message)
        return self._wire(message, entities)

    def _m_sendPhoto(self, params: dict[str, Any]) -> dict[str, Any]:
        """An upload (multipart `photo`) only: what Confide sends. Telegram takes JPEG, PNG and WebP images of at
        most 10 MB whose sides add up to at most 10000 and whose ratio is at most 20."""
        chat_id, photo = int(params["chat_id"]), params.get("photo")
        if not isinstance(photo, bytes):
            raise ApiError(400, "Bad Request: there is no photo in the request")
        if len(photo) > 10 * 1024 * 1024:
            raise ApiError(400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
        if not photo.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ApiError(400, "Bad Request: IMAGE_PROCESS_FAILED")
        width, height = struct.unpack(">II", photo[16:24])
        if width + height > 10000 or max(width, height) > 20 * min(width, height):
            raise ApiError(400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
        caption = str(params.get("caption", ""))
        message = BotMessage(self._next_message_id(chat_id), chat_id, caption, None, caption, photo=photo)
        self.messages.setdefault(chat_id, []).append(message)
        wire = self._wire(message, [])
        del wire["text"]
        size = {"file_id": f"photo{message.message_id}", "file_unique_id": f"uphoto{message.message_id}",
                "width": width, "height": height, "file_size": len(photo)}  # fmt: skip
        return {**wire, "photo": [size], **({"caption": caption} if caption else {})}

    def _m_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        found = [m for m in self.messages.get(chat_id, []) if m.message_id == message_id]
        if not found:
            raise ApiError(400, "Bad Request: message to edit not found")
        message, parse_mode = found[0], params.get("parse_mode")
        text, entities = _parsed(str(params["text"]), parse_mode)
        if text == message.text and parse_mode == message.parse_mode and params["text"] == message.raw:
            raise ApiError(400, NOT_MODIFIED)
        message.text, message.raw, message.parse_mode = text, str(params["text"]), parse_mode
        message.edits.append(text)
        return {**self._wire(message, entities), "edit_date": int(time.time())}

    def _m_getFile(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = str(params["file_id"])
        if file_id not in self.files:
            raise ApiError(400, "Bad Request: invalid file_id")
        path, content = self.files[file_id]
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": len(content), "file_path": path}

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        self.download_started.set()
        if self.hold_downloads is not None:
            await self.hold_downloads.wait()
        for path, content in self.files.values():
            if path == request.match_info["path"]:
                return web.Response(body=content, content_type="application/octet-stream")
        return web.Response(status=404)

    # -- helpers ---------------------------------------------------------------------------------

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _wire(self, message: BotMessage, entities: list[dict[str, Any]]) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": message.chat_id, "type": "private" if message.chat_id > 0 else "supergroup"}
        wire: dict[str, Any] = {
            "message_id": message.message_id, "date": int(time.time()), "chat": chat, "text": message.text,
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Confide", "username": BOT_USERNAME},
        }  # fmt: skip
        if entities:
            wire["entities"] = entities
        return wire

    async def _post_until_taken(self, update: dict[str, Any]) -> None:
        """Telegram retries a webhook delivery until the bot answers 2xx."""
        while self.webhook is not None:
            try:
                status = await self.post_to_webhook(update, self.webhook["secret_token"])
            except aiohttp.ClientError:
                status = 0
            self.webhook_statuses.append(status)
            if 200 <= status < 300:  # taken: Telegram forgets it
                self.confirmed = max(self.confirmed, update["update_id"])
                self.updates = [u for u in self.updates if u["update_id"] != update["update_id"]]
                return
            await asyncio.sleep(0.2)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        return dict(await request.json())
    if request.can_read_body:
        form = await request.post()
        return {k: v if isinstance(v, str) else v.file.read() for k, v in form.items()}
    return dict(request.query)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _error(exc: ApiError) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": exc.code, "description": exc.description}
    if exc.retry_after is not None:
        body["parameters"] = {"retry_after": exc.retry_after}
    return web.json_response(body, status=exc.code)


def _parsed(raw: str, parse_mode: str | None) -> tuple[str, list[dict[str, Any]]]:
    """The text as Telegram shows it, or the 400 Telegram answers for markup it cannot parse."""
    if parse_mode == "HTML":
        text, entities = _parse_html(raw)
    elif parse_mode == "MarkdownV2":
        text, entities = _parse_markdown_v2(raw), []
    else:
        text, entities = raw, []
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if len(text.encode("utf-16-le")) // 2 > 4096:
        raise ApiError(400, "Bad Request: message is too long")
    return text, entities


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text, self.open, self.entities = "", [], []  # type: ignore[var-annotated]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in HTML_TAGS:
            raise ApiError(400, f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}" at byte offset '
                                f"{len(self.text.encode())}")  # fmt: skip
        self.open.append((tag, len(self.text)))

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1][0] != tag:
            raise ApiError(400, f'Bad Request: can\'t parse entities: Unmatched end tag at byte offset '
                                f'{len(self.text.encode())}, expected "</{self.open[-1][0] if self.open else ""}>", '
                                f'found "</{tag}>"')  # fmt: skip
        name, start = self.open.pop()
        kind = {"b": "bold", "strong": "bold", "i": "italic", "em": "italic", "code": "code", "pre": "pre"}
        self.entities.append({"type": kind.get(name, name), "offset": start, "length": len(self.text) - start})

    def handle_data(self, data: str) -> None:
        self.text += data


def _parse_html(raw: str) -> tuple[str, list[dict[str, Any]]]:
    parser = _HtmlText()
    parser.feed(raw)
    parser.close()
    if parser.open:
        raise ApiError(400, f"Bad Request: can't parse entities: Can't find end tag corresponding to start tag "
                            f'"{parser.open[-1][0]}"')  # fmt: skip
    return parser.text, parser.entities


def _parse_markdown_v2(raw: str) -> str:
    out, escaped = [], False
    for offset, char in enumerate(raw):
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "*_~`|":
            continue  # formatting marks
        elif char in MARKDOWN_V2_RESERVED:
            raise ApiError(400, f"Bad Request: can't parse entities: Character '{char}' is reserved and must be "
                                f"escaped with the preceding '\\' (offset {offset})")  # fmt: skip
        else:
            out.append(char)
    return "".join(out)
