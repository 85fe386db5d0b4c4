"""The Telegram adapter: updates by long polling or webhook into the inbox, replies streamed and delivered.

Reliability: an update is confirmed to Telegram (the next getUpdates offset, or the webhook's 200) only
after `inbox.put` returned, so a crash loses nothing and a redelivered update is stored once. PTB's
Updater confirms before handlers run, hence the small polling loop here instead.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from telegram import BotCommand, InputFile, Message, ReplyParameters, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import AIORateLimiter, ExtBot
from telegram.request import HTTPXRequest

from adapters.telegram import redact
from adapters.telegram.convert import CHANNEL, Media, media_of, to_incoming
from adapters.telegram.render import preview, reply_parts, to_html
from adapters.telegram.sent import SentParts
from adapters.telegram.settings import TelegramSettings
from bridge.commands.command_table import menu
from bridge.config import TranscriberSettings
from bridge.intake.adapter import Capabilities, InboxPort, Members
from bridge.intake.hearing import fetched_to_hear
from bridge.intake.persons import PersonDirectory
from bridge.language.catalog import REPLY_LANGUAGES, SOURCE_LANGUAGE, speaking
from bridge.messages import Attachment, Image, IncomingMessage, OutgoingReply
from bridge.state.store import PlatformState

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message"]
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_MAX_BACKOFF_S = 30.0
PHOTO_CAPTION_CHARS = 1024
# Besides the default (English) menu, one per catalog language: Telegram shows it to users whose app is in that
# language (setMyCommands' language_code, an ISO 639-1 code as the catalogs' are).
MENU_LANGUAGES = tuple(lang for lang in REPLY_LANGUAGES if lang != SOURCE_LANGUAGE)


def command_menu(language: str = SOURCE_LANGUAGE) -> list[BotCommand]:
    """The command menu, from the table, its descriptions in `language` (bridge/language/catalog.py)."""
    with speaking(language):
        return [BotCommand(name, description) for name, description in menu()]


COMMANDS = command_menu()  # the default menu, for every app language without a menu of its own


def make_bot(settings: TelegramSettings, proxy: str | None = None) -> ExtBot[int]:
    assert settings.token is not None
    base = settings.api_base_url.rstrip("/")
    # Proxy environment variables are never read (httpx would): only a configured proxy (CONFIDE_PROXY_URL).
    http = {"proxy": proxy, "httpx_kwargs": {"trust_env": False}}
    return ExtBot(
        token=settings.token.get_secret_value(),
        base_url=base + "/bot",
        base_file_url=base + "/file/bot",
        request=HTTPXRequest(connection_pool_size=16, read_timeout=20, pool_timeout=10, **http),  # type: ignore[arg-type]
        get_updates_request=HTTPXRequest(connection_pool_size=1, read_timeout=10, **http),  # type: ignore[arg-type]
        # A 429 waits its retry_after and the call goes on; other calls pause meanwhile, as Telegram asks.
        rate_limiter=AIORateLimiter(max_retries=5),
    )


def retry_seconds(exc: RetryAfter) -> float:
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramAdapter:
    channel = CHANNEL

    def __init__(
        self,
        settings: TelegramSettings,
        data_dir: Path,
        directory: PersonDirectory,
        bot: ExtBot[int] | None = None,
        proxy: str | None = None,
        transcriber: TranscriberSettings | None = None,
    ) -> None:
        assert settings.token is not None, "TelegramSettings validates that a token is set"
        token = settings.token.get_secret_value()
        redact.install(token)
        self.settings = settings
        self.capabilities = Capabilities(can_edit=True, edit_interval_s=settings.edit_interval_s)
        self.bot = bot or make_bot(settings, proxy)
        self._intake_stopped = False
        self.in_doubt = 0  # parts sent again because an earlier send's outcome was not recorded
        self._directory = directory  # whose documents are downloaded
        self._transcriber = transcriber or TranscriberSettings()  # which voice messages are fetched to be heard
        self._state_dir = data_dir / "telegram"
        self._attachments_dir = data_dir / "attachments" / CHANNEL
        self._sent_parts: SentParts | None = None  # handed over by the core at assembly (`attach_state`)
        self._identity_path = self._state_dir / "bot.json"
        # The token starts with the bot's id; the username is remembered from the last getMe, so that
        # messages left from a previous run are routed right before this run has asked Telegram again.
        prefix = token.partition(":")[0]
        self.bot_id = int(prefix) if prefix.isdigit() else 0
        self.username = self._remembered_username()
        self.bot_names: tuple[str, ...] = ("@" + self.username,) if self.username else ()
        self._drafts = settings.drafts
        self._init_lock = asyncio.Lock()
        self._initialized = False

    def attach_directory(self, directory: PersonDirectory) -> None:
        """The core's persons, which follow `confide persons` while Confide runs."""
        self._directory = directory

    async def attach_state(self, state: PlatformState) -> None:
        """Its tables in the state database, given by the core before anything runs or is delivered."""
        self._sent_parts = SentParts(state)
        await self._sent_parts.forget_old()

    @property
    def _sent(self) -> SentParts:
        if self._sent_parts is None:
            raise RuntimeError("the Telegram adapter was given no state database (bridge.app.assemble hands it one)")
        return self._sent_parts

    # -- identity --------------------------------------------------------------------------------

    def _remembered_username(self) -> str:
        try:
            saved = json.loads(self._identity_path.read_text())
        except FileNotFoundError:
            return ""
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self._identity_path, exc)
            return ""
        return str(saved.get("username", "")) if saved.get("id") == self.bot_id else ""

    async def _ready(self) -> None:
        """getMe once (PTB's initialize), then the bot's id and @username are known."""
        if self._initialized:
            return
        async with self._init_lock:
            if self._initialized:
                return
            await self.bot.initialize()
            me = self.bot.bot
            self.bot_id, self.username = me.id, me.username or ""
            self.bot_names = ("@" + self.username,) if self.username else ()
            self._state_dir.mkdir(parents=True, exist_ok=True)
            self._identity_path.write_text(json.dumps({"id": me.id, "username": self.username}))
            self._initialized = True
            log.info("Telegram bot @%s (id %d) ready, %s mode", self.username, self.bot_id, self.settings.mode)

    # -- receiving -------------------------------------------------------------------------------

    async def run(self, inbox: InboxPort) -> None:
        try:
            await self._start_up()
            if self.settings.mode == "webhook":
                await self._serve_webhook(inbox)
            else:
                await self._poll(inbox)
        finally:
            await self._close()

    async def _start_up(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._ready()
                break
            except InvalidToken:
                log.error("Telegram rejected the bot token (CONFIDE_TELEGRAM__TOKEN); the adapter stops")
                raise
            except TelegramError as exc:
                log.warning("Telegram getMe failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
        await self._set_menus()

    async def _set_menus(self) -> None:
        """The default menu, then one per catalog language. The menu is a convenience (typed commands work
        without it): a failure is logged, and the other languages' menus are still set."""
        try:
            await self.bot.set_my_commands(COMMANDS)
        except TelegramError as exc:
            log.warning("setMyCommands failed: %s", exc)
        for language in MENU_LANGUAGES:
            try:
                await self.bot.set_my_commands(command_menu(language), language_code=language)
            except TelegramError as exc:
                log.warning("setMyCommands for language %s failed: %s", language, exc)

    async def _close(self) -> None:
        try:
            await self.bot.shutdown()
        except Exception:
            log.exception("closing the Telegram client failed")
        self._initialized = False

    async def stop_intake(self) -> None:
        """A graceful stop: fetch no more updates (Telegram keeps the unconfirmed ones); replies still go out."""
        self._intake_stopped = True

    async def _poll(self, inbox: InboxPort) -> None:
        """Long polling; an update's offset is passed (confirmed) only after it is in the inbox."""
        await self.bot.delete_webhook(drop_pending_updates=False)
        offset: int | None = None
        failures = 0
        while not self._intake_stopped:
            await inbox.wait_for_room()  # a nearly full disk: Telegram keeps the updates until there is room
            try:
                updates = await self.bot.get_updates(
                    offset=offset, timeout=self.settings.poll_timeout_s, allowed_updates=ALLOWED_UPDATES
                )
                for update in updates:
                    await self._receive(update, inbox)
                    offset = update.update_id + 1
                failures = 0
                if not updates and not self.settings.poll_timeout_s:
                    await asyncio.sleep(1.0)  # short polling: do not spin on an empty queue
            except InvalidToken:
                log.error("Telegram rejected the bot token while polling; the adapter stops")
                raise
            except RetryAfter as exc:
                log.warning("Telegram asks to wait %.0f s before polling again", retry_seconds(exc))
                await asyncio.sleep(retry_seconds(exc))
            except Exception as exc:
                # Unconfirmed updates come again with the same offset; nothing is lost by waiting.
                failures += 1
                delay = min(2.0 ** (failures - 1), _MAX_BACKOFF_S)
                log.warning("Telegram polling failed at offset %s (%r); retrying in %.0f s", offset, exc, delay)
                await asyncio.sleep(delay)
        await asyncio.Event().wait()  # stopped taking updates: the client stays open for deliveries until cancelled

    async def _serve_webhook(self, inbox: InboxPort) -> None:
        assert self.settings.webhook_url and self.settings.webhook_secret, "validated by TelegramSettings"
        secret = self.settings.webhook_secret.get_secret_value()
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(urlsplit(self.settings.webhook_url).path or "/", self._webhook_handler(inbox, secret))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.settings.webhook_listen, self.settings.webhook_port).start()
            # Listen first, so Telegram's first post after setWebhook finds us.
            await self.bot.set_webhook(
                self.settings.webhook_url, secret_token=secret, allowed_updates=ALLOWED_UPDATES, max_connections=40
            )
            log.info("Telegram webhook listening on %s:%d", self.settings.webhook_listen, self.settings.webhook_port)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    def _webhook_handler(self, inbox: InboxPort, secret: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            if self._intake_stopped:
                return web.Response(status=503)  # stopping: Telegram posts the update again later
            given = request.headers.get(SECRET_HEADER, "")
            if not hmac.compare_digest(given.encode(), secret.encode()):
                log.warning("webhook request from %s without the right secret token: refused", request.remote)
                return web.Response(status=403)
            try:
                update = Update.de_json(await request.json(), self.bot)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("webhook request from %s is not an update: %r", request.remote, exc)
                return web.Response(status=400)
            try:
                await self._receive(update, inbox)
            except Exception:
                # Not 200: Telegram delivers the update again later.
                log.exception("webhook update %s could not be stored", update.update_id)
                return web.Response(status=500)
            return web.Response(status=200)

        return handle

    async def _receive(self, update: Update, inbox: InboxPort) -> None:
        message = update.message
        if message is None or message.chat is None:
            log.debug("skipping update %s without a message", update.update_id)
            return
        fetch = self._may_fetch(message)
        media = [replace(m, download=True) if self._hears(message, m) else m for m in media_of(message)]
        attachments = [await self._attachment(message, one, fetch) for one in media]
        incoming = to_incoming(message, self.bot_id, self.username, attachments)
        await inbox.put(incoming)

    def _may_fetch(self, message: Message) -> bool:
        """Only documents a known person sends are imported (in a private chat into their history, in a group
        into the group's), so only those are downloaded; strangers' files never are."""
        if message.from_user is None:
            return False
        return self._directory.person_for(f"{CHANNEL}:{message.from_user.id}") is not None

    def _hears(self, message: Message, media: Media) -> bool:
        """A voice message without words in a private chat is a question, where a transcriber is set up: its file is
        needed (with a caption, the caption is the question, as it is for a document)."""
        if message.chat.type != "private" or message.caption or message.text:
            return False
        return fetched_to_hear(self._transcriber, media.mime_type, media.size)

    async def _attachment(self, message: Message, media: Media, fetch: bool) -> Attachment:
        attachment = Attachment(name=media.name, mime_type=media.mime_type, size=media.size)
        if not (media.download and fetch):
            return attachment
        folder = self._attachments_dir / str(message.chat.id)
        path = folder / f"{message.message_id}-{media.name}"
        try:
            file = await self.bot.get_file(media.file_id)
        except BadRequest as exc:
            # Permanent (e.g. over the Bot API's 20 MB download limit): pass it on without a file.
            log.warning("cannot fetch %s of message %s: %s", media.name, message.message_id, exc)
            return attachment
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        try:
            await file.download_to_drive(partial)
        except InvalidToken as exc:
            # A file URL answering 404 (PTB reads it as InvalidToken): gone for good, not worth a retry loop.
            log.warning("file %s of message %s is not available: %s", media.name, message.message_id, exc)
            return attachment
        os.replace(partial, path)  # a crash mid-download never leaves a truncated file under the real name
        return attachment.model_copy(update={"path": str(path), "size": path.stat().st_size})

    async def members(self, chat_id: str) -> Members:
        """A group's size and its administrators: the Bot API lists no other members, so only those are named."""
        await self._ready()
        count = await self.bot.get_chat_member_count(int(chat_id))
        admins = await self.bot.get_chat_administrators(int(chat_id))
        names = tuple(a.user.full_name for a in admins if a.user.id != self.bot_id)
        return Members(names, max(count - 1, len(names)))  # the count includes the bot itself

    # -- sending ---------------------------------------------------------------------------------

    async def typing(self, message: IncomingMessage) -> None:
        await self._ready()
        extra = message.extra
        await self.bot.send_chat_action(extra["chat_id"], ChatAction.TYPING, message_thread_id=extra.get("thread_id"))

    async def show_partial(self, message: IncomingMessage, text: str, edit_token: str | None) -> str | None:
        await self._ready()
        extra = message.extra
        chat_id, thread_id, shown = extra["chat_id"], extra.get("thread_id"), preview(text)
        if edit_token and edit_token.startswith("m:"):
            await self._edit(chat_id, int(edit_token[2:]), shown, None, shown)
            return edit_token
        if self._drafts and extra.get("chat_type") == "private" and await self._draft(chat_id, extra, shown):
            return f"d:{extra['message_id']}"
        sent = await self.bot.send_message(
            chat_id, shown, message_thread_id=thread_id, reply_parameters=_reply_to(extra["message_id"])
        )
        return f"m:{sent.message_id}"

    def edit_token_for(self, receipt: str) -> str | None:
        """The receipt of a delivered reply ("chat:message", its first part) as the token that edits it."""
        _, _, message_id = receipt.rpartition(":")
        return f"m:{message_id}" if message_id.lstrip("-").isdigit() else None

    async def _draft(self, chat_id: int, extra: dict[str, Any], text: str) -> bool:
        try:
            await self.bot.send_message_draft(
                chat_id, draft_id=extra["message_id"], text=text, message_thread_id=extra.get("thread_id")
            )
        except (BadRequest, InvalidToken) as exc:
            # An older or self-hosted Bot API server without drafts (404 reads as InvalidToken in PTB).
            log.warning("sendMessageDraft unavailable (%s); streaming by message edits from now on", exc)
            self._drafts = False
            return False
        return True

    async def deliver(self, reply: OutgoingReply) -> str | None:
        await self._ready()
        extra = reply.extra
        chat_id = int(extra.get("chat_id", reply.chat_id))
        token = reply.edit_token or ""
        done = await self._sent.parts(reply.reply_id)
        ids: list[int] = []
        texts = reply_parts(reply)
        # Pictures (charts) are the parts after the text: a photo each, recorded like a text part.
        parts: list[str | Image] = [*texts, *reply.images]
        for number, part in enumerate(parts):
            if number in done:
                ids.append(done[number])
                continue
            if number == 0 and token.startswith("m:") and isinstance(part, str):
                # The first part replaces the message that showed the answer growing.
                message_id = await self._edit(chat_id, int(token[2:]), to_html(part), ParseMode.HTML, part)
            else:
                message_id = await self._send_once(reply.reply_id, number, chat_id, part, extra)
            await self._sent.record(reply.reply_id, number, message_id)
            ids.append(message_id)
        return f"{chat_id}:{ids[0]}"

    async def _send_once(
        self, reply_id: str, number: int, chat_id: int, part: str | Image, extra: dict[str, Any]
    ) -> int:
        """A fresh message for one part, its sending recorded first: after a stop in between, it is in doubt."""
        if await self._sent.begin(reply_id, number):
            self.in_doubt += 1
            log.warning(
                "part %d of reply %s may have reached chat %s before the last stop; the Bot API cannot list a "
                "chat's messages to check, so it is sent again (in doubt)",
                number,
                reply_id,
                chat_id,
            )
        try:
            if isinstance(part, Image):
                return await self._send_photo(chat_id, part, extra)
            return await self._send(chat_id, part, extra, reply_to=number == 0)
        except TelegramError as exc:
            if not isinstance(exc, NetworkError):  # Telegram answered with an error: it did not take the part
                await self._sent.failed(reply_id, number)
            raise

    async def _send(self, chat_id: int, part: str, extra: dict[str, Any], reply_to: bool) -> int:
        options: dict[str, Any] = {"message_thread_id": extra.get("thread_id")}
        if reply_to and extra.get("message_id"):
            options["reply_parameters"] = _reply_to(extra["message_id"])
        try:
            sent = await self.bot.send_message(chat_id, to_html(part), parse_mode=ParseMode.HTML, **options)
        except BadRequest as exc:
            if not _is_parse_error(exc):
                raise
            log.warning("Telegram could not parse a reply in chat %s (%s); sending it as plain text", chat_id, exc)
            sent = await self.bot.send_message(chat_id, part, **options)
        return sent.message_id

    async def _send_photo(self, chat_id: int, image: Image, extra: dict[str, Any]) -> int:
        # A photo's caption holds at most 1024 UTF-16 units; the description of a chart is one line.
        caption = preview(image.alt, PHOTO_CAPTION_CHARS)
        try:
            sent = await self.bot.send_photo(
                chat_id, InputFile(image.data, filename=image.name), caption=caption,
                message_thread_id=extra.get("thread_id"),
            )  # fmt: skip
        except BadRequest as exc:
            # Telegram will never take this picture: the reply's text went out, so it is not held up for it.
            log.error("Telegram refused the picture %s for chat %s: %s; the reply goes without it", image.name,
                      chat_id, exc)  # fmt: skip
            return 0
        return sent.message_id

    async def _edit(self, chat_id: int, message_id: int, text: str, parse_mode: str | None, plain: str) -> int:
        """Edit in place; 'not modified' is success, a parse error retries plain, a lost message is re-sent."""
        try:
            await self.bot.edit_message_text(text, chat_id=chat_id, message_id=message_id, parse_mode=parse_mode)
            return message_id
        except BadRequest as exc:
            if _is_not_modified(exc):
                return message_id
            if parse_mode and _is_parse_error(exc):
                log.warning("Telegram could not parse an edit in chat %s (%s); editing as plain text", chat_id, exc)
                return await self._edit(chat_id, message_id, plain, None, plain)
            if not _is_gone(exc):
                raise
            log.warning("message %s in chat %s cannot be edited (%s); sending anew", message_id, chat_id, exc)
        if parse_mode:
            return await self._send(chat_id, plain, {}, reply_to=False)
        sent = await self.bot.send_message(chat_id, plain)
        return sent.message_id


def _reply_to(message_id: int) -> ReplyParameters:
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)


def _is_parse_error(exc: BadRequest) -> bool:
    return "can't parse entities" in exc.message.lower()


def _is_not_modified(exc: BadRequest) -> bool:
    return "message is not modified" in exc.message.lower()


def _is_gone(exc: BadRequest) -> bool:
    text = exc.message.lower()
    return "message to edit not found" in text or "message can't be edited" in text
