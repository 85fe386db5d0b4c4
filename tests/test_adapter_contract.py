"""One contract for every platform adapter (issue 21), as mautrix-python runs one store suite over every
implementation and errbot ships a backend for tests: whatever the platform,

- a message is acknowledged to its platform only once the inbox has it: a `put` that fails leaves the message with
  the platform, which offers it again, and it is stored once;
- delivering the same reply twice shows it to the person once (a retry after a crash, or after a failure reported
  too late, never doubles an answer).

Each platform runs against its real peer where one runs here (Synapse; Postfix and Dovecot), else the tests' server
of its real wire protocol (the Bot API). The console is no platform with acknowledgements or retries: it is left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import pytest

from adapters.email.adapter import EmailAdapter
from adapters.email.settings import EmailSettings
from adapters.matrix import build_adapter as build_matrix
from adapters.matrix.settings import MatrixSettings
from adapters.telegram import build_adapter as build_telegram
from adapters.telegram.settings import TelegramSettings
from bridge.config import PersonSettings, Settings
from bridge.dispatch.handler import reply_to
from bridge.intake.adapter import Adapter, KeepsState
from bridge.intake.platforms import platforms
from bridge.state.db import StateDB
from tests.fakes.bot_api import FakeTelegram
from tests.fakes.inbox import RecordingInbox
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import eventually, make_settings, model_for
from tests.mailservers import PASSWORD, PEOPLE_DOMAIN, DkimKey, MailServers
from tests.synapse import Person, Synapse
from tests.test_email import CONFIDE, SELECTOR, Mailbox, body, mail, signed

PLATFORMS = ["telegram", "matrix", "email"]
TELEGRAM_USER = 100


@dataclass
class Rig:
    """One platform, its adapter running on an inbox whose first put fails, and a known person on its peer."""

    adapter: Adapter
    inbox: RecordingInbox
    send: Callable[[str], Awaitable[None]]  # the person writes to Confide
    shown: Callable[[str], Awaitable[int]]  # how many messages with that text reached the person


@pytest.fixture(scope="module")
async def synapse() -> AsyncIterator[Synapse]:
    server = await Synapse().start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def mail_servers() -> AsyncIterator[MailServers]:
    servers = await MailServers().start()
    yield servers
    await servers.stop()


@dataclass
class Peers:
    synapse: Synapse
    mail: MailServers


@pytest.fixture(params=PLATFORMS)
async def rig(
    request: pytest.FixtureRequest, tmp_path: Path, fake_llm: FakeOpenAI, synapse: Synapse, mail_servers: MailServers
) -> AsyncIterator[Rig]:
    builders = {"telegram": telegram_rig, "matrix": matrix_rig, "email": email_rig}
    async with builders[request.param](Peers(synapse, mail_servers), tmp_path, fake_llm) as built:
        yield built


@contextlib.asynccontextmanager
async def running(adapter: Adapter, settings: Settings) -> AsyncIterator[RecordingInbox]:
    """The adapter as assembly leaves it (its tables on a state database handed over), running on the inbox."""
    db = StateDB(settings.state_path)
    await db.open()
    platform = platforms()[adapter.channel]
    state = await db.platform_state(adapter.channel, platform.migrations)
    if isinstance(adapter, KeepsState):
        await adapter.attach_state(state)
    inbox = RecordingInbox(failures=1)
    task = asyncio.create_task(adapter.run(inbox))
    try:
        yield inbox
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await db.close()


@contextlib.asynccontextmanager
async def telegram_rig(peers: Peers, tmp_path: Path, llm: FakeOpenAI) -> AsyncIterator[Rig]:
    fake = await FakeTelegram().start()
    own = TelegramSettings(enabled=True, token=fake.token, api_base_url=fake.base_url, poll_timeout_s=1, drafts=False)
    persons = [PersonSettings(id="ana", name="Ana", accounts=[f"telegram:{TELEGRAM_USER}"])]
    settings = make_settings(tmp_path, {"main": model_for(llm)}, persons=persons, telegram=own)
    adapter = build_telegram(settings)

    async def send(text: str) -> None:
        fake.push_message(TELEGRAM_USER, text)

    async def shown(text: str) -> int:
        return sum(1 for m in fake.bot_messages(TELEGRAM_USER) if m.text == text)

    try:
        async with running(adapter, settings) as inbox:  # type: ignore[arg-type]
            yield Rig(adapter, inbox, send, shown)  # type: ignore[arg-type]
    finally:
        await fake.stop()


@contextlib.asynccontextmanager
async def matrix_rig(peers: Peers, tmp_path: Path, llm: FakeOpenAI) -> AsyncIterator[Rig]:
    synapse = peers.synapse
    ana = await Person(synapse, f"ana{uuid.uuid4().hex[:8]}").start()
    bot = str((await synapse.register(f"confide{uuid.uuid4().hex[:8]}", PASSWORD))["user_id"])
    own = MatrixSettings(enabled=True, homeserver=synapse.url, user_id=bot, password=PASSWORD)
    persons = [PersonSettings(id="ana", name="Ana", accounts=[f"matrix:{ana.user_id}"])]
    settings = make_settings(tmp_path, {"main": model_for(llm)}, persons=persons, matrix=own)
    adapter = build_matrix(settings)
    room = await ana.create_room(invite=(bot,))

    async def send(text: str) -> None:
        await ana.send(room, text)

    async def shown(text: str) -> int:
        return sum(1 for event in ana.from_user(room, bot) if getattr(event, "body", None) == text)

    try:
        async with running(adapter, settings) as inbox:  # type: ignore[arg-type]
            await eventually(lambda: ana.joined(room, bot), within_s=30)
            yield Rig(adapter, inbox, send, shown)  # type: ignore[arg-type]
    finally:
        await ana.stop()


@contextlib.asynccontextmanager
async def email_rig(peers: Peers, tmp_path: Path, llm: FakeOpenAI) -> AsyncIterator[Rig]:
    servers = peers.mail
    key = DkimKey.generate(tmp_path)
    ana = f"ana-{uuid.uuid4().hex[:8]}@{PEOPLE_DOMAIN}"
    own = EmailSettings(
        smtp_enabled=True, smtp_port=servers.confide_port, addresses=[CONFIDE], relay_host="127.0.0.1",
        relay_port=servers.smtp_port, relay_security="starttls", relay_user=f"relay@{PEOPLE_DOMAIN}",
        relay_password=PASSWORD, ca_file=servers.cert, from_address=CONFIDE,
    )  # fmt: skip
    persons = [PersonSettings(id="ana", name="Ana", accounts=[f"email:{ana}"])]
    settings = make_settings(tmp_path, {"main": model_for(llm)}, persons=persons, email=own)

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        wanted = f"{SELECTOR.decode()}._domainkey.{PEOPLE_DOMAIN}"
        return key.txt_record if name.decode().rstrip(".") == wanted else None

    adapter = EmailAdapter(settings, dnsfunc=lookup)

    async def send(text: str) -> None:
        """As a sending MTA does: a 4xx is retried, until the mail is taken."""
        raw = signed(mail("a question", text, ana), key)
        for _ in range(20):
            try:
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=servers.confide_port, timeout=10) as client:
                    await client.sendmail(ana, [CONFIDE], raw)
                return
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code // 100 != 4:
                    raise
                await asyncio.sleep(0.3)
        raise AssertionError("the mail was never taken")

    async def shown(text: str) -> int:
        async with Mailbox(servers, ana) as box:
            return sum(1 for message in await box.messages() if text in body(message))

    async with running(adapter, settings) as inbox:  # type: ignore[arg-type]
        await asyncio.wait_for(adapter.smtp_started.wait(), 10)
        yield Rig(adapter, inbox, send, shown)  # type: ignore[arg-type]


async def test_a_message_is_acknowledged_only_once_the_inbox_has_it(rig: Rig) -> None:
    question = f"where is the spare key {uuid.uuid4().hex[:6]}?"
    await rig.send(question)
    await eventually(lambda: rig.inbox.stored(question), within_s=60)
    await asyncio.sleep(1.5)  # an offer made twice would be stored twice by now
    assert rig.inbox.puts >= 2, "the first put failed: the message must have been offered again"
    assert len(rig.inbox.stored(question)) == 1


async def test_delivering_the_same_reply_twice_shows_it_once(rig: Rig) -> None:
    question = f"and the boat key {uuid.uuid4().hex[:6]}?"
    await rig.send(question)
    await eventually(lambda: rig.inbox.stored(question), within_s=60)
    [message] = rig.inbox.stored(question)
    answer = f"Under the blue flower pot ({uuid.uuid4().hex[:6]})."
    reply = reply_to(message, answer)
    await rig.adapter.deliver(reply)
    await rig.adapter.deliver(reply)  # a retry: the outbox did not learn that the first one went out

    async def arrived() -> bool:
        return await rig.shown(answer) >= 1

    await eventually(arrived, within_s=30)
    await asyncio.sleep(2)  # a second copy would have arrived by now
    assert await rig.shown(answer) == 1
