"""No egress beyond the named endpoints, proven: import, chat and serve (Telegram, Matrix, email) run in a network
namespace that has only loopback (tests/egress_run.py), every connect() and datagram under strace; any
destination that is not loopback fails, DNS queries (port 53) included. The environment names a proxy that no
configuration names; Confide must not use it."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_INET = re.compile(r'sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)')
_INET6 = re.compile(r'sin6_port=htons\((\d+)\).*?inet_pton\(AF_INET6, "([^"]+)"')


def destinations(log: str) -> list[tuple[str, int, str]]:
    """(address, port, the strace line) of every IP destination in an strace log of connect/send calls."""
    found = []
    for line in log.splitlines():
        for pattern in (_INET, _INET6):
            for port, address in pattern.findall(line):
                found.append((address, int(port), line.strip()))
    return found


def outside(log: str) -> list[str]:
    """The lines that reach for anything but loopback."""
    return [line for address, _, line in destinations(log) if not ipaddress.ip_address(address).is_loopback]


def test_the_strace_reading_finds_dns_proxies_and_ipv6() -> None:
    log = "\n".join([
        '7 connect(13, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = 0',
        '7 connect(5, {sa_family=AF_INET, sin_port=htons(3128), sin_addr=inet_addr("10.9.9.9")}, 16) = -1 ENETUNREACH',
        '7 connect(6, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, '
        '"2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28) = -1',
        '7 connect(7, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        '7 sendto(8, "x", 1, 0, {sa_family=AF_INET6, sin6_port=htons(53), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 1',
        '7 connect(9, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT',
    ])  # fmt: skip
    assert [d[:2] for d in destinations(log)] == [
        ("10.255.255.53", 53), ("10.9.9.9", 3128), ("2001:db8::1", 443), ("127.0.0.1", 8080), ("::1", 53)
    ]  # fmt: skip
    assert len(outside(log)) == 3


async def test_import_chat_and_serve_contact_nothing_but_loopback(tmp_path: Path) -> None:
    script = f"ip link set lo up && exec {sys.executable} -m tests.egress_run {tmp_path}"
    process = await asyncio.create_subprocess_exec(
        "unshare", "-rn", "sh", "-c", script, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 400)
    assert process.returncode == 0, out.decode(errors="replace")[-5000:]
    result = json.loads((tmp_path / "result.json").read_text())
    # Each step did its work: an empty strace log of a run that did nothing proves nothing.
    assert result["import"]["code"] == 0 and result["import"]["imported"], result["import"]
    assert result["chat"]["code"] == 0 and result["chat"]["answered"], result["chat"]
    serve = result["serve"]
    assert serve["telegram"] and serve["matrix"] and serve["email"], serve
    assert serve["exit"] == 0, serve["log"]  # stopped gracefully, nothing left running
    for step in ("import", "chat", "serve"):
        log = (tmp_path / f"strace-{step}.log").read_text()
        if step != "import":  # an import contacts nothing; chat and serve talk to the model and the platforms
            assert destinations(log), f"{step}: strace recorded no connection at all"
        assert outside(log) == [], f"{step} reached beyond loopback:\n" + "\n".join(outside(log)[:20])


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
