"""A full disk costs 4xx replies and a warning, never a crash (issue 20): on a real small tmpfs, `confide serve`
answers, the disk is filled, a message sent meanwhile is not taken (Telegram keeps it; /readyz says why), the space
is freed, and that message is answered, once, by the same process. Started on a disk that is too full, Confide
refuses with how much it needs.

Before: the first mails got 451, then "database or disk is full", and the process died of SIGBUS (the embedded
index writes into sparse memory-mapped 32 MiB files); a restart died again the same way."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from adapters.email.settings import EmailSettings
from adapters.email.smtp_server import Outcome, serve_smtp
from tests.cli_helpers import kill_if_running, run_cli, start_serve, telegram_serve_env
from tests.fakes.bot_api import FakeTelegram
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import eventually
from tests.mailservers import free_port

USER = 300
MB = 1024 * 1024
FLOOR_MB = 96  # the default CONFIDE_MIN_FREE_MB


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 200 MB tmpfs of the test's own (the suite runs as root, as CI does)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def fill_until(disk: Path, free_mb: int) -> Path:
    """Take the disk's space until only `free_mb` MB are left (allocated for real: tmpfs has no sparse cheat)."""
    ballast = disk / "ballast"
    size = shutil.disk_usage(disk).free - free_mb * MB
    with ballast.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, size)
    return ballast


async def readiness(port: str) -> tuple[int, str]:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        return response.status_code, response.text


def answers(telegram: FakeTelegram, question: str) -> list[str]:
    return [m.text for m in telegram.bot_messages(USER) if m.text.startswith(f"You asked: {question}")]


async def test_a_full_disk_holds_messages_back_and_takes_them_once_there_is_room(
    small_disk: Path, telegram: FakeTelegram, fake_llm: FakeOpenAI
) -> None:
    data = small_disk / "data"
    data.mkdir(mode=0o700)  # the service runs in it
    env = telegram_serve_env(data, telegram, fake_llm, USER)
    env["CONFIDE_LOG_LEVEL"] = "INFO"
    port, log = env["CONFIDE_METRICS__PORT"], small_disk.parent / "serve.log"
    process = await start_serve(env, log)
    try:
        telegram.push_message(USER, "where is the spare key?")
        await eventually(lambda: answers(telegram, "where is the spare key?"), within_s=90)

        ballast = fill_until(small_disk, FLOOR_MB - 30)
        await eventually(lambda: _not_ready_for_disk(port), within_s=15)
        telegram.push_message(USER, "and the boat key?")
        polls = len(telegram.calls_of("getUpdates"))
        await asyncio.sleep(4)
        assert process.returncode is None, log.read_text()[-3000:]
        assert answers(telegram, "and the boat key?") == [], "a message was taken below the floor"
        assert len(telegram.calls_of("getUpdates")) <= polls + 1, "Telegram was polled below the floor"

        ballast.unlink()
        await eventually(lambda: answers(telegram, "and the boat key?"), within_s=60)
        assert await readiness(port) == (200, "ok\n")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        await kill_if_running(process)
    output = log.read_text()
    assert output.count("the disk is nearly full") == 1 and output.count("the disk has room again") == 1, output
    assert "Traceback" not in output, output[-3000:]
    assert len(answers(telegram, "where is the spare key?")) == 1 and len(answers(telegram, "and the boat key?")) == 1


async def _not_ready_for_disk(port: str) -> bool:
    status, text = await readiness(port)
    return status == 503 and "disk nearly full" in text


async def test_too_little_space_to_start_is_refused_saying_how_much_is_needed(
    small_disk: Path, fake_llm: FakeOpenAI
) -> None:
    data = small_disk / "data"
    fill_until(small_disk, FLOOR_MB - 40)
    data.mkdir(mode=0o700)
    env = telegram_serve_env(data, FakeTelegram(), fake_llm, USER)
    result = await run_cli(["chat"], env, stdin="hello\n")
    assert result.code == 2, result.stderr
    assert f"Confide needs at least {FLOOR_MB} MB there to start safely" in result.stderr, result.stderr
    assert list(data.iterdir()) == [], "something was written on the full disk"


async def test_smtp_says_452_while_the_disk_is_below_its_floor_and_takes_mail_again_after(tmp_path: Path) -> None:
    """SMTP must answer at once: below the floor a mail is deferred with 452 4.3.1 (the sending MTA keeps it and
    retries), never taken and then lost; with room again the same mail is taken."""
    settings = EmailSettings(smtp_enabled=True, smtp_port=free_port(), addresses=["confide@example.org"],
                             relay_host="127.0.0.1", from_address="confide@example.org")  # fmt: skip
    taken: list[bytes] = []
    room = False

    async def accept(raw: bytes, envelope_sender: str | None, peer: str | None) -> Outcome:
        taken.append(raw)
        return Outcome.STORED

    ready = asyncio.Event()
    server = asyncio.create_task(serve_smtp(settings, accept, ready, has_room=lambda: room))
    mail = b"From: ana@example.org\r\nSubject: key\r\n\r\nwhere is the key?\r\n"
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=settings.smtp_port) as client:
            with pytest.raises(aiosmtplib.SMTPResponseException) as full:
                await client.sendmail("ana@example.org", ["confide@example.org"], mail)
        room = True
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=settings.smtp_port) as client:
            await client.sendmail("ana@example.org", ["confide@example.org"], mail)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    assert (full.value.code, full.value.message) == (452, "4.3.1 Insufficient system storage; try again later")
    assert len(taken) == 1
