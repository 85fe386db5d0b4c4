"""`confide serve --role`: one gateway holds the platform's connection (Telegram; email through a real Postfix and
Dovecot), two workers answer, all on one PostgreSQL; either worker is killed with SIGKILL at random moments, 20
times, while people keep writing; every message is answered exactly once, each chat in order. A second gateway for
the same account waits for the first one's lease."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid
from pathlib import Path

import pytest

from tests.cli_helpers import bot_replies, cli_env, kill_if_running, serve_ready, start_serve
from tests.fakes.bot_api import FakeTelegram
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.helpers import eventually
from tests.mailservers import CONFIDE_DOMAIN, PASSWORD, PEOPLE_DOMAIN, MailServers, free_port

PEOPLE = [300 + n for n in range(6)]
CYCLES = 20


def report(platform: str, replies_per_message: list[int]) -> None:
    """The line benchmarks/scale.py shows (it runs these tests): each message's replies, as lost and duplicated."""
    lost = replies_per_message.count(0)
    duplicated = sum(max(0, n - 1) for n in replies_per_message)
    print(f"roles: {platform} gateway 1 workers 2 kills {CYCLES} messages {len(replies_per_message)} lost {lost} "
          f"duplicated {duplicated}")  # fmt: skip


def took_over(log: str) -> bool:
    """Whether a killed worker's message was taken over: by the other worker's claim, or by its own next start."""
    return "taking over message" in log or "interrupted by the last shutdown" in log


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def role_env(data_dir: Path, role: str, state_url: str, telegram: FakeTelegram, llm: FakeOpenAI) -> dict[str, str]:
    data_dir.mkdir(mode=0o700, exist_ok=True)
    persons = [{"id": f"p{user}", "accounts": [f"telegram:{user}"]} for user in PEOPLE]
    models = {"main": {"base_url": llm.base_url, "model": llm.model, "concurrency": 4, "timeout_s": 60}}
    return cli_env(
        data_dir, persons=json.dumps(persons), models=json.dumps(models), metrics__port=str(free_port()),
        telegram__enabled="true", telegram__token=telegram.token, telegram__api_base_url=telegram.base_url,
        telegram__poll_timeout_s="1", telegram__drafts="false", log_level="INFO", state_url=state_url, role=role,
        lease_s="1", index_conversations="false",
    )  # fmt: skip


async def test_one_gateway_and_two_workers_answer_every_message_once_while_workers_are_killed(
    tmp_path: Path, telegram: FakeTelegram, fake_llm: FakeOpenAI, state_url: str
) -> None:
    fake_llm.default = Behaviour(delay_s=0.4)  # answers take a while: kills find messages at work
    gateway_env = role_env(tmp_path / "gateway", "gateway", state_url, telegram, fake_llm)
    worker_envs = [role_env(tmp_path / f"worker{n}", "worker", state_url, telegram, fake_llm) for n in range(2)]
    log = tmp_path / "serve.log"
    gateway = await start_serve(gateway_env, log)
    workers = [await start_serve(env, log) for env in worker_envs]
    asked: dict[int, list[str]] = {user: [] for user in PEOPLE}
    try:
        await eventually(lambda: serve_ready(gateway_env), within_s=60)
        for env in worker_envs:
            await eventually(lambda env=env: serve_ready(env), within_s=60)  # type: ignore[misc]
        for cycle in range(CYCLES):
            for user in random.sample(PEOPLE, 3):
                text = f"question {len(asked[user])} of {user} in cycle {cycle}"
                asked[user].append(text)
                telegram.push_message(user, text)
            await asyncio.sleep(random.uniform(0.3, 1.2))
            victim = random.randrange(2)
            workers[victim].send_signal(signal.SIGKILL)
            await workers[victim].wait()
            workers[victim] = await start_serve(worker_envs[victim], log)
        await eventually(lambda: all(len(bot_replies(telegram, u)) >= len(asked[u]) for u in PEOPLE), within_s=180)
        await asyncio.sleep(2)  # a duplicate would come right after
    finally:
        for process in [gateway, *workers]:
            await kill_if_running(process)
    output = log.read_text()
    counts = [sum(r.startswith(f"You asked: {t}") for r in bot_replies(telegram, u)) for u in PEOPLE for t in asked[u]]
    report("telegram", counts)
    for user in PEOPLE:
        sent = bot_replies(telegram, user)
        assert len(sent) == len(asked[user]), (user, sent, asked[user], output[-3000:])
        for reply, text in zip(sent, asked[user], strict=True):  # one answer each, in the order asked
            assert reply.startswith(f"You asked: {text}"), (user, sent, asked[user])
    assert took_over(output), "no kill caught a message at work: the takeover was not exercised"
    assert "a worker delivers nothing" not in output


async def test_a_second_gateway_for_one_account_waits_until_the_first_is_gone(
    tmp_path: Path, telegram: FakeTelegram, fake_llm: FakeOpenAI, state_url: str
) -> None:
    first_env = role_env(tmp_path / "first", "gateway", state_url, telegram, fake_llm)
    second_env = role_env(tmp_path / "second", "gateway", state_url, telegram, fake_llm)
    worker_env = role_env(tmp_path / "worker", "worker", state_url, telegram, fake_llm)
    first = await start_serve(first_env, tmp_path / "first.log")
    second = worker = None
    try:
        await eventually(lambda: serve_ready(first_env), within_s=60)
        second = await start_serve(second_env, tmp_path / "second.log")
        worker = await start_serve(worker_env, tmp_path / "worker.log")
        await eventually(lambda: "held by another gateway" in (tmp_path / "second.log").read_text(), within_s=60)
        polls = len(telegram.calls_of("getUpdates"))
        await asyncio.sleep(3)
        assert not await serve_ready(second_env), "the second gateway started its connection beside the first"
        first.send_signal(signal.SIGKILL)
        await first.wait()
        await eventually(lambda: serve_ready(second_env), within_s=30)  # the lease (1 s) ran out: taken over
        telegram.push_message(PEOPLE[0], "are you there?")
        await eventually(lambda: bot_replies(telegram, PEOPLE[0]), within_s=30)
        assert [text.startswith("You asked: are you there?") for text in bot_replies(telegram, PEOPLE[0])] == [True]
        assert len(telegram.calls_of("getUpdates")) > polls
    finally:
        for process in (first, second, worker):
            if process is not None:
                await kill_if_running(process)


@pytest.fixture(scope="module")
async def servers() -> AsyncIterator[MailServers]:
    mail = await MailServers().start()
    yield mail
    await mail.stop()


CONFIDE_MAIL = f"confide@{CONFIDE_DOMAIN}"


def email_env(data_dir: Path, role: str, state_url: str, servers: MailServers, llm: FakeOpenAI,
              senders: list[str], smtp_port: int | None = None) -> dict[str, str]:  # fmt: skip
    data_dir.mkdir(mode=0o700, exist_ok=True)
    persons = [{"id": f"p{n}", "accounts": [f"email:{address}"]} for n, address in enumerate(senders)]
    models = {"main": {"base_url": llm.base_url, "model": llm.model, "concurrency": 4, "timeout_s": 60}}
    return cli_env(
        data_dir, persons=json.dumps(persons), models=json.dumps(models), metrics__port=str(free_port()),
        email__smtp_enabled="true", email__smtp_port=str(smtp_port or servers.confide_port),
        email__addresses=json.dumps([CONFIDE_MAIL]), email__tls_cert=str(servers.cert), email__tls_key=str(servers.key),
        email__relay_host="127.0.0.1", email__relay_port=str(servers.smtp_port), email__relay_security="starttls",
        email__relay_user=f"relay@{PEOPLE_DOMAIN}", email__relay_password=PASSWORD, email__ca_file=str(servers.cert),
        email__from_address=CONFIDE_MAIL, email__trusted_authserv_ids='["mx.test"]',
        email__trusted_relays='["127.0.0.1"]', email__rate_limit_per_hour="1000", log_level="INFO",
        state_url=state_url, role=role, lease_s="1", index_conversations="false",
    )  # fmt: skip


async def test_email_through_one_gateway_and_two_workers_killed_at_random_answers_every_mail_once(
    tmp_path: Path, servers: MailServers, fake_llm: FakeOpenAI, state_url: str
) -> None:
    """Mail comes through Postfix to the gateway's SMTP server; workers answer; replies go out through Postfix into
    each sender's Dovecot mailbox, one per mail (In-Reply-To), however often a worker is killed."""
    import aiosmtplib

    fake_llm.default = Behaviour(delay_s=0.4)
    senders = [f"roles-{n}-{uuid.uuid4().hex[:6]}@{PEOPLE_DOMAIN}" for n in range(4)]
    gateway_env = email_env(tmp_path / "gateway", "gateway", state_url, servers, fake_llm, senders)
    worker_envs = [email_env(tmp_path / f"w{n}", "worker", state_url, servers, fake_llm, senders) for n in range(2)]
    log = tmp_path / "serve.log"
    asked: dict[str, str] = {}  # Message-ID -> question

    async def send(question: str) -> None:
        sender = random.choice(senders)
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, CONFIDE_MAIL, question
        msg["Message-ID"] = make_msgid(domain=PEOPLE_DOMAIN)
        msg["Authentication-Results"] = f"mx.test; dmarc=pass header.from={PEOPLE_DOMAIN}"
        msg.set_content(question)
        asked[msg["Message-ID"]] = question
        await aiosmtplib.send(msg, sender=sender, recipients=[CONFIDE_MAIL], hostname="127.0.0.1",
                              port=servers.smtp_port, start_tls=False)  # fmt: skip

    def replies() -> Counter[str]:
        found: Counter[str] = Counter()
        for sender in senders:
            for folder in ("new", "cur"):
                for path in (servers.maildir(sender) / folder).glob("*"):
                    headers = BytesParser(policy=policy.default).parsebytes(path.read_bytes(), headersonly=True)
                    found[str(headers["In-Reply-To"])] += 1
        return found

    gateway = await start_serve(gateway_env, log)
    workers = [await start_serve(env, log) for env in worker_envs]
    try:
        await eventually(lambda: serve_ready(gateway_env), within_s=60)
        for cycle in range(CYCLES):
            for n in range(2):
                await send(f"question {cycle}-{n} about the cabin")
            await asyncio.sleep(random.uniform(0.3, 1.2))
            victim = random.randrange(2)
            workers[victim].send_signal(signal.SIGKILL)
            await workers[victim].wait()
            workers[victim] = await start_serve(worker_envs[victim], log)

        def all_answered() -> bool:
            found = replies()
            return all(found[message_id] >= 1 for message_id in asked)

        try:
            await eventually(all_answered, within_s=180)
        except AssertionError:
            await servers.retry_queued()  # Postfix's deferred queue, nudged as tests/test_chaos.py does
            await eventually(all_answered, within_s=60)
        await asyncio.sleep(3)  # a duplicate would come right after
    finally:
        for process in [gateway, *workers]:
            await kill_if_running(process)
    found = replies()
    report("email", [found[message_id] for message_id in asked])
    assert sorted(found[message_id] for message_id in asked) == [1] * len(asked), (found, log.read_text()[-3000:])
    assert took_over(log.read_text()), "no kill caught a mail at work: the takeover was not exercised"


async def test_two_email_gateways_take_mail_at_once_and_one_delivers(
    tmp_path: Path, servers: MailServers, fake_llm: FakeOpenAI, state_url: str
) -> None:
    """SMTP intake is shared: two gateways each take mail on their own address, while only the one holding the
    account delivers; killed, the other takes the delivery over."""
    import ssl

    import aiosmtplib

    senders = [f"pair-{uuid.uuid4().hex[:6]}@{PEOPLE_DOMAIN}"]
    ports = [free_port(), free_port()]
    envs = [email_env(tmp_path / f"g{n}", "gateway", state_url, servers, fake_llm, senders, ports[n]) for n in (0, 1)]
    worker_env = email_env(tmp_path / "w", "worker", state_url, servers, fake_llm, senders)
    tls = ssl.create_default_context(cafile=str(servers.cert))
    asked: list[str] = []

    async def send(port: int, question: str) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = senders[0], CONFIDE_MAIL, question
        msg["Message-ID"] = make_msgid(domain=PEOPLE_DOMAIN)
        msg["Authentication-Results"] = f"mx.test; dmarc=pass header.from={PEOPLE_DOMAIN}"
        msg.set_content(question)
        asked.append(msg["Message-ID"])
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True, tls_context=tls) as client:
            await client.send_message(msg)

    def replied() -> Counter[str]:
        found: Counter[str] = Counter()
        for folder in ("new", "cur"):
            for path in (servers.maildir(senders[0]) / folder).glob("*"):
                headers = BytesParser(policy=policy.default).parsebytes(path.read_bytes(), headersonly=True)
                found[str(headers["In-Reply-To"])] += 1
        return found

    first = await start_serve(envs[0], tmp_path / "first.log")
    second = worker = None
    try:
        await eventually(lambda: serve_ready(envs[0]), within_s=60)
        second = await start_serve(envs[1], tmp_path / "second.log")
        worker = await start_serve(worker_env, tmp_path / "worker.log")
        await eventually(lambda: serve_ready(envs[1]), within_s=60)  # takes mail although it does not deliver
        await send(ports[0], "question to the first gateway")
        await send(ports[1], "question to the second gateway")
        await eventually(lambda: all(replied()[m] for m in asked), within_s=60)
        assert "held by another gateway" in (tmp_path / "second.log").read_text()
        first.send_signal(signal.SIGKILL)
        await first.wait()
        await send(ports[1], "question after the first is gone")
        await eventually(lambda: all(replied()[m] for m in asked), within_s=60)
        await asyncio.sleep(2)
    finally:
        for process in (first, second, worker):
            if process is not None:
                await kill_if_running(process)
    assert [replied()[m] for m in asked] == [1, 1, 1]
    assert "taken over by this gateway" in (tmp_path / "second.log").read_text()
