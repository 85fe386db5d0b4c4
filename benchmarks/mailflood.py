"""Hostile SMTP senders against a person's mail: how long a normal signed question waits for its answer.

    .venv/bin/python benchmarks/mailflood.py [--questions 40] [--rounds 2] [--hostile-addresses 1] [--nice 19]

Three processes, loopback only. Confide: the real email adapter's SMTP server in the whole bridge (state database,
embedder, retrieval), answering through an instant OpenAI-compatible stream server (benchmarks/stream_server.py)
and sending replies through a relay. This process: the person's mail client (DKIM-signed questions from 127.0.0.1,
the key served to the adapter as tests do, by `dnsfunc`), the relay sink that receives the replies (aiosmtpd), and
the model server. A flooder: unauthenticated senders on 127.0.0.2 and up (`--hostile-addresses`), sending without
pause: a Sender header of 60,000 commas (3 at a time), 24 MB unsigned mails (8 at a time), mails nested 1,000
deep in message/rfc822 (2 at a time); a 4xx answer is retried after 50 ms.

The time of a question: from the start of its SMTP transaction to its reply at the sink. The questions are asked
one after another, alone (baseline) and during the flood, in turn for `--rounds` rounds (a new flooder each), and
the p95 of each phase is over all its rounds. The flooder runs at `--nice 19`: a remote attacker's sending costs
Confide's host no CPU, and here it shares the same cores (`--nice 0` shows that too). Peak RSS: Confide's process
(VmHWM); the worst lag of Confide's event loop (a 10 ms sleep woken late) is printed for each phase.
Last line: `mailflood: N hostile mails, normal answer p95 X s (baseline Y s), peak RSS Z MB`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bridge  # noqa: F401  (telemetry off before any model import)
from benchmarks.stats import percentile

DOMAIN = "example.test"
PERSON = f"alice@{DOMAIN}"
CONFIDE = "confide@confide.test"
SELECTOR = b"s1"
MAIL_BYTES = 24_000_000
AT_ONCE = {"commas": 3, "24 MB": 8, "nested": 2}  # hostile mails of each kind sent at the same time


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- Confide (child process) -------------------------------------------------------------------------


async def serve(config: dict[str, Any], txt: bytes) -> None:
    from adapters.email.adapter import EmailAdapter
    from bridge.app import assemble
    from bridge.config import load_settings

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return txt if name.decode().rstrip(".") == f"s1._domainkey.{DOMAIN}" else None

    email = {"smtp_enabled": True, "smtp_port": config["smtp_port"], "addresses": [CONFIDE], "relay_host": "127.0.0.1",
             "relay_port": config["sink_port"], "relay_security": "none", "from_address": CONFIDE,
             "rate_limit_per_hour": 10_000}  # fmt: skip
    model = {"base_url": config["model_url"], "model": "instant", "concurrency": 8}
    settings = load_settings(_env_file=None, data_dir=Path(config["data_dir"]), models={"main": model},
                             persons=[{"id": "alice", "name": "Alice", "accounts": [f"email:{PERSON}"]}],
                             index_conversations=False, retrieval={"min_relevance": 0}, email=email)  # fmt: skip
    adapter = EmailAdapter(settings, dnsfunc=lookup)
    async with assemble(settings, [adapter]) as running:
        probe = asyncio.create_task(lag_probe(Path(config["lag_file"])))
        try:
            await running.dispatcher.run()
        finally:
            probe.cancel()


async def lag_probe(path: Path) -> None:
    """How late Confide's event loop wakes a 10 ms sleep: the worst since the last reset, written each second."""
    loop = asyncio.get_running_loop()
    worst, written = 0.0, loop.time()
    while True:
        began = loop.time()
        await asyncio.sleep(0.01)
        worst = max(worst, loop.time() - began - 0.01)
        if loop.time() - written > 1.0:
            reset = path.with_suffix(".reset")
            if await asyncio.to_thread(reset.exists):
                await asyncio.to_thread(reset.unlink)
                worst = 0.0
            await asyncio.to_thread(path.write_text, f"{worst:.4f}")
            written = loop.time()


# -- the flooder (child process) ---------------------------------------------------------------------


def hostile_mails() -> dict[str, bytes]:
    def folded(line: str) -> str:
        return "\r\n ".join(line[start : start + 76] for start in range(0, len(line), 76))

    head = f"From: mallory@evil.test\r\nTo: {CONFIDE}\r\nSubject: hello\r\nMessage-ID: <x@evil.test>\r\n"
    commas = (head + folded("Sender: " + "," * 60_000) + "\r\n\r\nhello\r\n").encode()
    line = b"x" * 74 + b"\r\n"
    big = head.encode() + b"\r\n" + line * (MAIL_BYTES // len(line))
    nested = f"From: mallory@evil.test\r\nTo: {CONFIDE}\r\nSubject: deep\r\n\r\nhello\r\n"
    for _ in range(1000):
        nested = "Content-Type: message/rfc822\r\n\r\n" + nested
    return {"commas": commas, "24 MB": big, "nested": (head + nested).encode()}


async def flood(config: dict[str, Any]) -> None:
    import aiosmtplib

    # A remote attacker's sending costs Confide's host no CPU; here it shares the cores, at the lowest priority.
    os.nice(config["nice"])
    mails = hostile_mails()
    addresses = [f"127.0.0.{2 + n}" for n in range(config["addresses"])]
    sent: Counter[str] = Counter()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    deadline = loop.time() + config["seconds"]

    async def sender(kind: str, number: int) -> None:
        source = addresses[number % len(addresses)]
        while not stop.is_set() and loop.time() < deadline and sum(sent.values()) < config["max_mails"]:
            code = 0
            try:
                await aiosmtplib.send(mails[kind], sender="mallory@evil.test", recipients=[CONFIDE],
                                      hostname="127.0.0.1", port=config["smtp_port"], start_tls=False, timeout=120,
                                      source_address=(source, 0))  # fmt: skip
                code = 250
            except aiosmtplib.SMTPResponseException as exc:
                code = exc.code
            except (aiosmtplib.SMTPException, OSError):
                code = -1
            sent[f"{kind} {code}"] += 1
            if code != 250 and code < 500:
                await asyncio.sleep(0.05)

    at_once = {kind: count for kind, count in AT_ONCE.items() if kind in config["kinds"]}
    await asyncio.gather(*(sender(kind, n) for kind, count in at_once.items() for n in range(count)))
    print(json.dumps(dict(sent)), flush=True)


# -- the person, the relay sink and the model (this process) ---------------------------------------------


class Sink:
    """The relay Confide's replies go through: when each question's reply arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        reply = BytesParser(policy=policy.default).parsebytes(envelope.content)
        self.arrived[str(reply["In-Reply-To"]).strip("<>")] = time.perf_counter()
        return "250 OK"


def dkim_key(folder: Path) -> tuple[bytes, Path]:
    """A private key (PEM) and the file with its DNS TXT record."""
    pem = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(pem), "2048"], check=True, capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(pem), "-pubout", "-outform", "DER"], check=True,
                            capture_output=True).stdout  # fmt: skip
    txt = folder / "dkim.txt"
    txt.write_bytes(b"v=DKIM1; k=rsa; p=" + base64.b64encode(public))
    return pem.read_bytes(), txt


def question(number: int, private_pem: bytes) -> tuple[str, bytes]:
    import dkim

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = PERSON, CONFIDE, f"question {number}"
    msg["Date"] = format_datetime(time_now())
    msg["Message-ID"] = make_msgid(domain=DOMAIN)
    msg.set_content(f"Where did we put the spare key for the cabin, question {number}?")
    raw = msg.as_bytes(policy=policy.SMTP)
    return msg["Message-ID"].strip("<>"), dkim.sign(raw, SELECTOR, DOMAIN.encode(), private_pem) + raw


def time_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def ask(port: int, sink: Sink, private_pem: bytes, number: int) -> float:
    import aiosmtplib

    message_id, raw = question(number, private_pem)
    began = time.perf_counter()
    while True:  # as a sending MTA would, sooner: a 4xx is retried
        try:
            await aiosmtplib.send(raw, sender=PERSON, recipients=[CONFIDE], hostname="127.0.0.1", port=port,
                                  start_tls=False, timeout=120)  # fmt: skip
            break
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise
            await asyncio.sleep(1.0)
    for _ in range(12_000):
        if message_id in sink.arrived:
            return sink.arrived[message_id] - began
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no reply to question {number} within 60 s")


async def ask_all(port: int, sink: Sink, private_pem: bytes, first: int, count: int) -> list[float]:
    times = []
    for number in range(first, first + count):
        times.append(await ask(port, sink, private_pem, number))
        await asyncio.sleep(0.2)
    return times


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_for_port(port: int, process: asyncio.subprocess.Process, within_s: float = 180) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"Confide exited with {process.returncode}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("Confide's SMTP server did not start")


async def child(mode: str, config: dict[str, Any], log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, f"--{mode}", json.dumps(config), stdout=asyncio.subprocess.PIPE if mode == "flood"
        else log.open("ab"), stderr=log.open("ab"),
    )  # fmt: skip


class Phase:
    """One kind of phase (alone or in the flood) over the rounds: answer times and the worst loop lag."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.lag = 0.0

    def line(self, name: str) -> str:
        p50, p95 = percentile(self.times, 0.5), percentile(self.times, 0.95)
        return f"{name}: {len(self.times)} questions, p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(self.times):.2f} s"


async def measured(phase: Phase, lag_file: Path, asking: Coroutine[Any, Any, list[float]]) -> None:
    """The answer times of `asking` and the event loop's worst lag meanwhile, added to `phase`."""
    await asyncio.to_thread(lag_file.with_suffix(".reset").touch)
    await asyncio.sleep(1.5)  # the probe has reset
    phase.times += await asking
    await asyncio.sleep(1.5)  # the probe has written
    phase.lag = max(phase.lag, float(await asyncio.to_thread(lag_file.read_text)))


async def run(args: argparse.Namespace, work: Path, private_pem: bytes, txt: Path) -> None:
    from aiosmtpd.controller import Controller

    from benchmarks.stream_server import StreamServer

    model = await StreamServer().start()
    sink, sink_port, smtp_port = Sink(), free_port(), free_port()
    relay = Controller(sink, hostname="127.0.0.1", port=sink_port)
    relay.start()
    lag_file = work / "lag.txt"
    config = {"txt": str(txt), "smtp_port": smtp_port, "sink_port": sink_port, "model_url": model.base_url,
              "data_dir": str(work / "data"), "lag_file": str(lag_file)}  # fmt: skip
    flood_config = {"smtp_port": smtp_port, "addresses": args.hostile_addresses, "seconds": 600,
                    "max_mails": args.max_hostile, "kinds": args.kinds.split(","), "nice": args.nice}  # fmt: skip
    log = work / "confide.log"
    confide = await child("serve", config, log)
    flooder: asyncio.subprocess.Process | None = None
    alone, flooded, sent = Phase(), Phase(), Counter[str]()
    try:
        await wait_for_port(smtp_port, confide)
        await ask_all(smtp_port, sink, private_pem, 0, 3)  # warm: the embedder's first questions are slower
        # In turn, so that whatever else the machine does weighs on both alike.
        for round_ in range(args.rounds):
            first = 1000 * (round_ + 1)
            await measured(alone, lag_file, ask_all(smtp_port, sink, private_pem, first, args.questions))
            flooder = await child("flood", flood_config, log)
            await asyncio.sleep(3.0)  # the flood under way: 24 MB mails take a while to arrive
            await measured(flooded, lag_file, ask_all(smtp_port, sink, private_pem, first + 500, args.questions))
            if flooder.returncode is None:
                flooder.send_signal(signal.SIGTERM)  # it stops by itself at --max-hostile mails
            out, _ = await asyncio.wait_for(flooder.communicate(), 180)
            sent.update(json.loads(out.decode().strip().splitlines()[-1]))
        rss = peak_rss_mb(confide.pid)
    finally:
        for process in (flooder, confide):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        relay.stop()
        await model.stop()
    print(alone.line("alone"))
    print(flooded.line("flooded"))
    print(f"Confide's event loop, worst lag: {alone.lag * 1000:.0f} ms alone, {flooded.lag * 1000:.0f} ms in the flood")
    print("hostile mails by kind and SMTP reply: " + ", ".join(f"{k}: {v}" for k, v in sorted(sent.items())))
    print(f"Confide's log: {log}")
    print(f"mailflood: {sum(sent.values())} hostile mails, normal answer p95 {percentile(flooded.times, 0.95):.2f} s "
          f"(baseline {percentile(alone.times, 0.95):.2f} s), peak RSS {rss:.0f} MB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=40, help="questions asked alone, then in the flood, a round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both, in turn")
    parser.add_argument("--hostile-addresses", type=int, default=1, help="loopback addresses the flood comes from")
    parser.add_argument("--max-hostile", type=int, default=20_000, help="at most this many hostile mails")
    parser.add_argument("--kinds", default=",".join(AT_ONCE), help="hostile kinds sent (comma-separated)")
    parser.add_argument("--nice", type=int, default=19, help="the flooder's niceness (0: as Confide's)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--flood", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        config = json.loads(args.serve)
        asyncio.run(serve(config, Path(config["txt"]).read_bytes()))
    elif args.flood:
        asyncio.run(flood(json.loads(args.flood)))
    else:
        work = Path(tempfile.mkdtemp(prefix="confide-mailflood-"))
        (work / "data").mkdir(mode=0o700)
        private_pem, txt = dkim_key(work)
        asyncio.run(run(args, work, private_pem, txt))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
