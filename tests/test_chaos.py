"""Chaos: `confide serve` as a subprocess, killed with SIGKILL and stopped with SIGTERM at random (seeded) moments
while people write to it through real peers (the Bot API server of the tests; Postfix; Synapse), then started
again.

Every message a platform accepted is answered; an answer goes out twice only in the case the README documents
(a send cut off between the platform taking it and Confide recording it, logged "in doubt" and counted). A few
cycles per platform here (CONFIDE_CHAOS_CYCLES SIGKILLs and as many SIGTERMs); `benchmarks/chaos.py --cycles 50`
runs 50 of each.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid
from pathlib import Path

import pytest

from bridge.answering.answer import UNSUPPORTED
from bridge.config import Settings
from tests.cli_helpers import cli_env, kill_if_running, start_serve
from tests.fakes.bot_api import FakeTelegram
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.mailservers import CONFIDE_DOMAIN, PASSWORD, PEOPLE_DOMAIN, MailServers
from tests.synapse import Person, Synapse

SEED = int(os.environ.get("CONFIDE_CHAOS_SEED", "20261130"))
# Cycles of each kind: that many SIGKILLs and as many SIGTERMs, in a seeded order (benchmarks/chaos.py sets more).
CYCLES = int(os.environ.get("CONFIDE_CHAOS_CYCLES", "2"))
PER_CYCLE = 4  # messages sent in each cycle, while the process may be starting, answering or being stopped
SENDERS = 3
CONFIDE_MAIL = f"confide@{CONFIDE_DOMAIN}"
MATRIX_PASSWORD = "secret-password"


@dataclass
class Outcome:
    accepted: list[str] = field(default_factory=list)  # the questions the platform accepted
    answers: Counter[str] = field(default_factory=Counter)  # final answers seen per question
    in_doubt: int = 0  # sends the logs counted as in doubt
    drains: list[float] = field(default_factory=list)  # seconds each graceful stop took, from its log line
    sigterm_codes: list[int] = field(default_factory=list)
    nudges: int = 0  # times the peer was asked to retry what it held (Postfix's queue; see test_email)

    @property
    def lost(self) -> list[str]:
        return [q for q in self.accepted if self.answers[q] == 0]

    @property
    def duplicated(self) -> int:
        return sum(n - 1 for n in self.answers.values() if n > 1)


async def chaos(
    env: dict[str, str],
    log: Path,
    send: Callable[[str], Awaitable[None]],
    count_answers: Callable[[], Counter[str]],
    cycles: int = CYCLES,
    seed: int = SEED,
    nudge: Callable[[], Awaitable[None]] | None = None,
    llm: FakeOpenAI | None = None,
) -> Outcome:
    """Start, send, kill or stop at a random moment, again; finally run until everything is answered. `nudge`:
    what the peer needs, now and then while answers are missing, to retry what it holds (see test_email).
    `llm`: the slow model server of the cycles, made quick for the last run: one chat's questions are answered
    in order, one at a time, so a chat that got hundreds over the cycles would otherwise take longer to catch
    up than the cycles took."""
    rng = random.Random(seed)
    outcome = Outcome()
    stops = [signal.SIGKILL, signal.SIGTERM] * cycles
    rng.shuffle(stops)
    for cycle, how in enumerate(stops):
        process = await start_serve(env, log)
        try:
            for n in range(PER_CYCLE):
                question = f"question {cycle}-{n} about the cabin"
                await send(question)
                outcome.accepted.append(question)
                await asyncio.sleep(rng.uniform(0.0, 0.6))
            await asyncio.sleep(rng.uniform(0.0, 5.0))  # starting, answering or delivering: any moment
            process.send_signal(how)
            code = await exited(process, how, log)
            if how == signal.SIGTERM:
                outcome.sigterm_codes.append(code)
        finally:
            await kill_if_running(process)
    if llm is not None:
        llm.default = Behaviour()
    process = await start_serve(env, log)
    try:
        loop = asyncio.get_running_loop()
        deadline, nudge_at = loop.time() + 180 + len(outcome.accepted) / 2, loop.time() + 15
        while unanswered := [q for q in outcome.accepted if count_answers()[q] == 0]:
            assert loop.time() < deadline, f"unanswered: {unanswered}\n{tail(log)}"
            if nudge is not None and loop.time() > nudge_at:
                await nudge()
                outcome.nudges += 1
                nudge_at = loop.time() + 15
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # a duplicate, were one coming, arrives now
        process.send_signal(signal.SIGTERM)
        outcome.sigterm_codes.append(await exited(process, signal.SIGTERM, log))
    finally:
        await kill_if_running(process)
    outcome.answers = count_answers()
    logged = tail(log, 0)
    outcome.in_doubt = logged.count("(in doubt)")
    outcome.drains = [float(s) for s in re.findall(r"stopped within ([0-9.]+) s", logged)]
    return outcome


async def exited(process: asyncio.subprocess.Process, how: signal.Signals, log: Path) -> int:
    """The exit code after a signal; a process still running 40 s later (twice the grace period) fails the test
    with what it logged."""
    try:
        return await asyncio.wait_for(process.wait(), 40)
    except TimeoutError:
        raise AssertionError(f"still running 40 s after {how.name}:\n{tail(log)}") from None


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:]


def base_env(tmp_path: Path, llm: FakeOpenAI, persons: list[dict[str, object]], **settings: str) -> dict[str, str]:
    models = {"main": {"base_url": llm.base_url, "model": llm.model, "timeout_s": 60}}
    # The model wait as shipped (300 s): a model answering slowly on a loaded machine keeps questions waiting
    # instead of giving the fallback at once (the tests' default), which would be followed by a second reply.
    wait = {"model_wait_s": "300", **settings}
    return cli_env(tmp_path, persons=json.dumps(persons), models=json.dumps(models), **wait)


ANSWERED = re.compile(r"You asked: (question \S+ about the cabin)")


def final(text: str) -> bool:
    """A whole answer, not a draft cut short: it ends with its citation, with the note that nothing supports it
    (the history holds only earlier questions), or with the question itself (nothing to cite)."""
    asked = ANSWERED.match(text)
    if asked is None:
        return False
    return "Sources:" in text or text.rstrip().endswith(("[1]", UNSUPPORTED)) or text.rstrip() == asked[0]


def report(platform: str, outcome: Outcome) -> None:
    drain = max(outcome.drains, default=0.0)
    print(f"chaos: {platform} cycles {2 * CYCLES} accepted {len(outcome.accepted)} lost {len(outcome.lost)} "
          f"duplicated {outcome.duplicated} drain {drain:.1f} s (in doubt {outcome.in_doubt}, "
          f"{CYCLES} SIGKILL, {len(outcome.sigterm_codes)} SIGTERM with the last"
          f"{f', peer nudged {outcome.nudges} time(s)' if outcome.nudges else ''})")  # fmt: skip


def assert_kept(outcome: Outcome) -> None:
    assert outcome.lost == []
    # Every graceful stop ended within the default grace period (CONFIDE_SHUTDOWN_GRACE_S, unset here).
    assert max(outcome.drains, default=0.0) <= Settings.model_fields["shutdown_grace_s"].default, outcome.drains
    assert outcome.duplicated <= outcome.in_doubt, "an answer was sent twice outside the documented in-doubt case"
    assert outcome.sigterm_codes and all(code == 0 for code in outcome.sigterm_codes), outcome.sigterm_codes


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = await FakeTelegram().start()
    yield server
    await server.stop()


async def test_telegram_keeps_every_message_through_kills_and_stops(
    tmp_path: Path, telegram: FakeTelegram, fake_llm: FakeOpenAI
) -> None:
    fake_llm.default = Behaviour(chunk_delay_s=0.15)
    persons = [{"id": f"p{i}", "accounts": [f"telegram:{100 + i}"]} for i in range(SENDERS)]
    env = base_env(tmp_path, fake_llm, persons, telegram__enabled="true", telegram__token=telegram.token,
                   telegram__api_base_url=telegram.base_url, telegram__poll_timeout_s="1",
                   telegram__edit_interval_s="0.3")  # fmt: skip
    rng = random.Random(SEED)

    async def send(question: str) -> None:
        telegram.push_message(100 + rng.randrange(SENDERS), question)

    def answers() -> Counter[str]:
        found: Counter[str] = Counter()
        for i in range(SENDERS):
            for message in telegram.bot_messages(100 + i):
                if final(message.text):
                    found[ANSWERED.match(message.text)[1]] += 1  # type: ignore[index]
        return found

    outcome = await chaos(env, tmp_path / "serve.log", send, answers, llm=fake_llm)
    report("telegram", outcome)
    assert_kept(outcome)


@pytest.fixture(scope="module")
async def servers() -> AsyncIterator[MailServers]:
    mail = await MailServers().start()
    yield mail
    await mail.stop()


async def test_email_keeps_every_mail_through_kills_and_stops(
    tmp_path: Path, servers: MailServers, fake_llm: FakeOpenAI
) -> None:
    """Mail goes through Postfix, which retries while Confide is down or stopping (421); replies come back through
    Postfix into the sender's Dovecot mailbox. Postfix is the trusted relay whose Authentication-Results count."""
    import aiosmtplib

    fake_llm.default = Behaviour(chunk_delay_s=0.15)
    senders = [f"chaos-{i}-{uuid.uuid4().hex[:6]}@{PEOPLE_DOMAIN}" for i in range(SENDERS)]
    persons = [{"id": f"p{i}", "accounts": [f"email:{address}"]} for i, address in enumerate(senders)]
    env = base_env(
        tmp_path, fake_llm, persons, email__smtp_enabled="true", email__smtp_port=str(servers.confide_port),
        email__addresses=json.dumps([CONFIDE_MAIL]), email__tls_cert=str(servers.cert), email__tls_key=str(servers.key),
        email__relay_host="127.0.0.1", email__relay_port=str(servers.smtp_port), email__relay_security="starttls",
        email__relay_user=f"relay@{PEOPLE_DOMAIN}", email__relay_password=PASSWORD, email__ca_file=str(servers.cert),
        email__from_address=CONFIDE_MAIL, email__trusted_authserv_ids='["mx.test"]',
        email__trusted_relays='["127.0.0.1"]', email__rate_limit_per_hour="1000",
    )  # fmt: skip
    rng = random.Random(SEED)
    asked: dict[str, str] = {}  # Message-ID -> question

    async def send(question: str) -> None:
        sender = rng.choice(senders)
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, CONFIDE_MAIL, question
        msg["Message-ID"] = make_msgid(domain=PEOPLE_DOMAIN)
        msg["Authentication-Results"] = f"mx.test; dmarc=pass header.from={PEOPLE_DOMAIN}"
        msg.set_content(question)
        asked[msg["Message-ID"]] = question
        await aiosmtplib.send(msg, sender=sender, recipients=[CONFIDE_MAIL], hostname="127.0.0.1",
                              port=servers.smtp_port, start_tls=False)  # fmt: skip

    replied: dict[str, str] = {}  # mail file (without Maildir flags) -> its In-Reply-To, each file parsed once

    def answers() -> Counter[str]:
        # Parsing every mail at every poll grew with the run and blocked this event loop, the model server's too.
        for sender in senders:
            for folder in ("new", "cur"):
                for path in (servers.maildir(sender) / folder).glob("*"):
                    if (name := path.name.split(":")[0]) not in replied:
                        headers = BytesParser(policy=policy.default).parsebytes(path.read_bytes(), headersonly=True)
                        replied[name] = str(headers["In-Reply-To"])
        return Counter(asked[r] for r in replied.values() if r in asked)

    # Postfix's queue manager, run here with a 1 s retry delay, can strand a mail it is still deferring when the
    # next queue scan finds it ("skipped, still being delivered"): it never reached Confide, and a restarted queue
    # manager (postfix reload) delivers it. Nudged only when answers are missing; the log shows it when it was.
    try:
        outcome = await chaos(env, tmp_path / "serve.log", send, answers, nudge=servers.retry_queued, llm=fake_llm)
    except AssertionError as exc:  # what Postfix and Dovecot did with the mail says where it stopped
        raise AssertionError(f"{exc}\n--- mail servers ---\n{servers.log()[-4000:]}") from None
    report("email", outcome)
    assert_kept(outcome)


@pytest.fixture(scope="module")
async def synapse() -> AsyncIterator[Synapse]:
    server = await Synapse().start()
    yield server
    await server.stop()


async def test_matrix_keeps_every_message_and_never_answers_twice(
    tmp_path: Path, synapse: Synapse, fake_llm: FakeOpenAI
) -> None:
    """A room on a real Synapse, the first questions asked before Confide has even joined: transaction ids make a
    repeated send the same event, so there is no in-doubt case (a question's replies are counted, not its edits)."""
    fake_llm.default = Behaviour(chunk_delay_s=0.15)
    bot = (await synapse.register(f"confide{uuid.uuid4().hex[:6]}", MATRIX_PASSWORD))["user_id"]
    ana = await Person(synapse, f"ana{uuid.uuid4().hex[:6]}").start()
    try:
        persons = [{"id": "ana", "accounts": [f"matrix:{ana.user_id}"]}]
        env = base_env(tmp_path, fake_llm, persons, matrix__enabled="true", matrix__homeserver=synapse.url,
                       matrix__user_id=bot, matrix__password=MATRIX_PASSWORD)  # fmt: skip
        room = await ana.create_room(invite=(bot,))
        sent: dict[str, str] = {}  # event id -> question

        async def send(question: str) -> None:
            sent[await ana.send(room, question)] = question

        def answers() -> Counter[str]:
            found: Counter[str] = Counter()
            for event in ana.from_user(room, bot):
                relation = event.source["content"].get("m.relates_to", {})
                asked = relation.get("m.in_reply_to", {}).get("event_id")
                if relation.get("rel_type") != "m.replace" and asked in sent:
                    found[sent[asked]] += 1
            return found

        outcome = await chaos(env, tmp_path / "serve.log", send, answers, llm=fake_llm)
    finally:
        await ana.stop()
    report("matrix", outcome)
    assert_kept(outcome)
    assert outcome.duplicated == 0 and outcome.in_doubt == 0
