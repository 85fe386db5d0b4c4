"""Confide used for real inside a network namespace that has only loopback (run by tests/test_egress.py).

    unshare -rn sh -c 'ip link set lo up && python -m tests.egress_run WORKDIR'

Starts the peers on loopback (a fake OpenAI-compatible model server, the Bot API server of the tests, Synapse,
an SMTP relay), then runs `confide import files`, `confide chat` and `confide serve` (Telegram, Matrix and email
at once) each under `strace -f`, which records every connect() and every datagram sent, by Python or by any
native library, in WORKDIR/strace-STEP.log. The environment names a proxy (HTTPS_PROXY, ...) that no
configuration names: Confide must ignore it. WORKDIR/result.json says what each step did, so a run that
contacted nothing because nothing happened cannot pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from tests.fakes.bot_api import FakeTelegram
from tests.fakes.openai_server import FakeOpenAI
from tests.synapse import Person, Synapse

# A proxy no configuration names, in every spelling httpx, aiohttp, urllib and libcurl read.
PROXY = "http://10.9.9.9:3128"
PROXY_ENV = {name: PROXY for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")}
TRACED = "connect,sendto,sendmsg,sendmmsg"
SERVE_S = 25.0  # onnxruntime's telemetry first called home about 10 s into a run: serve long enough to see it
CONFIDE_MAIL = "confide@confide.test"
ALICE_MAIL = "alice@people.test"


class Relay:
    """Where Confide's mail replies go: an SMTP server on loopback that keeps what it is given."""

    def __init__(self) -> None:
        self.mails: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.mails.append(envelope.content)
        return "250 OK"


async def traced(work: Path, step: str, args: list[str], env: dict[str, str], stdin: str = "") -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "strace", "-f", "-qq", "-e", f"trace={TRACED}", "-o", str(work / f"strace-{step}.log"),
        sys.executable, "-m", "bridge.launch", *args,
        env=env, cwd=work, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(stdin.encode()), 180)
    return process.returncode or 0, out.decode(errors="replace")


async def until(predicate: Any, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.2)
    return False


async def main(work: Path) -> None:
    result: dict[str, Any] = {}
    llm = await FakeOpenAI().start()
    telegram = await FakeTelegram().start()
    relay = Relay()
    smtp = Controller(relay, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    synapse = await Synapse().start()
    try:
        bot = (await synapse.register("confide"))["user_id"]
        ana = await Person(synapse, "ana").start()
        persons = [{"id": "me", "name": "Me", "accounts": ["console:me", "telegram:100", f"matrix:{ana.user_id}",
                                                            f"email:{ALICE_MAIL}"]}]  # fmt: skip
        smtp_port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")}
        env.update(PROXY_ENV)
        env.update({
            "CONFIDE_DATA_DIR": str(work / "data"), "PYTHONUNBUFFERED": "1", "CONFIDE_PERSONS": json.dumps(persons),
            "CONFIDE_RETRIEVAL__MIN_RELEVANCE": "0",
            "CONFIDE_MODELS": json.dumps({"main": {"base_url": llm.base_url, "model": "test-model"}}),
            "CONFIDE_TELEGRAM__ENABLED": "true", "CONFIDE_TELEGRAM__TOKEN": telegram.token,
            "CONFIDE_TELEGRAM__API_BASE_URL": telegram.base_url, "CONFIDE_TELEGRAM__POLL_TIMEOUT_S": "1",
            "CONFIDE_MATRIX__ENABLED": "true", "CONFIDE_MATRIX__HOMESERVER": synapse.url,
            "CONFIDE_MATRIX__USER_ID": bot, "CONFIDE_MATRIX__PASSWORD": "secret-password",
            "CONFIDE_EMAIL__SMTP_ENABLED": "true", "CONFIDE_EMAIL__SMTP_PORT": str(smtp_port),
            "CONFIDE_EMAIL__ADDRESSES": json.dumps([CONFIDE_MAIL]), "CONFIDE_EMAIL__FROM_ADDRESS": CONFIDE_MAIL,
            "CONFIDE_EMAIL__RELAY_HOST": "127.0.0.1", "CONFIDE_EMAIL__RELAY_PORT": str(smtp.port),
            "CONFIDE_EMAIL__RELAY_SECURITY": "none", "CONFIDE_EMAIL__TRUSTED_AUTHSERV_IDS": '["mx.test"]',
            "CONFIDE_EMAIL__TRUSTED_RELAYS": '["127.0.0.1"]',
        })  # fmt: skip
        (work / "data").mkdir()
        note = work / "cabin.md"
        note.write_text("# Cabin\nThe wifi password at the cabin is pine-cone-1987.\n")
        code, out = await traced(work, "import", ["import", "files", str(note), "--person", "me"], env)
        result["import"] = {"code": code, "imported": "Imported 1" in out, "output": out[-2000:]}
        code, out = await traced(work, "chat", ["chat"], env, stdin="What is the wifi password at the cabin?\n")
        result["chat"] = {
            "code": code,
            "answered": "You asked: What is the wifi password" in out,
            "output": out[-2000:],
        }
        result["serve"] = await serve(work, env, telegram, ana, bot, relay, smtp_port)
        await ana.stop()
    finally:
        await synapse.stop()
        smtp.stop()
        await telegram.stop()
        await llm.stop()
    (work / "result.json").write_text(json.dumps(result, indent=2))


async def serve(
    work: Path, env: dict[str, str], telegram: FakeTelegram, ana: Person, bot: str, relay: Relay, smtp_port: int
) -> dict[str, Any]:
    # A session of its own: the stop signal goes to Confide itself, not only to strace (which blocks it, and
    # would leave its tracee running if it were killed instead).
    process = await asyncio.create_subprocess_exec(
        "strace", "-f", "-qq", "-e", f"trace={TRACED}", "-o", str(work / "strace-serve.log"),
        sys.executable, "-m", "bridge.launch", "serve", env=env, cwd=work,
        stdout=(work / "serve.log").open("wb"), stderr=asyncio.subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    started = time.monotonic()
    done: dict[str, Any] = {}
    try:
        telegram.push_message(100, "What is the wifi password at the cabin?")
        done["telegram"] = await until(lambda: telegram.bot_messages(100), 60)
        room = await ana.create_room(invite=(bot,))
        done["matrix_joined"] = await until(lambda: ana.joined(room, bot), 60)
        await ana.send(room, "What is the wifi password at the cabin?")
        done["matrix"] = await until(lambda: ana.from_user(room, bot), 60)
        done["email"] = await send_mail(smtp_port) and await until(lambda: relay.mails, 60)
        await asyncio.sleep(max(0.0, SERVE_S - (time.monotonic() - started)))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            done["exit"] = await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    done["log"] = (work / "serve.log").read_text(errors="replace")[-3000:]
    return done


async def send_mail(port: int) -> bool:
    import aiosmtplib

    mail = (
        f"From: {ALICE_MAIL}\r\nTo: {CONFIDE_MAIL}\r\nSubject: cabin\r\nMessage-ID: <q1@people.test>\r\n"
        "Authentication-Results: mx.test; dmarc=pass header.from=people.test\r\n\r\n"
        "What is the wifi password at the cabin?\r\n"
    ).encode()
    for _ in range(100):  # until serve listens
        try:
            await aiosmtplib.send(mail, sender=ALICE_MAIL, recipients=[CONFIDE_MAIL], hostname="127.0.0.1", port=port,
                                  start_tls=False)  # fmt: skip
            return True
        except (aiosmtplib.SMTPConnectError, OSError):
            await asyncio.sleep(0.3)
    return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
