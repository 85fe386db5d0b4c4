"""The embedded model server is Confide's alone, tested against another local Unix user (issue 20, item 3).

Another user used to bind the server's port (readable in /proc/PID/cmdline) while the model loaded, and Confide
sent the person's question, history included, to whatever answered /v1/models. Now Confide listens on the port
itself before the server starts and hands it the socket, and the server answers only Confide's key.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.config import LocalModelSettings
from bridge.models.llm import Delta, ModelClient, ModelUnavailable
from bridge.models.local_model import LocalModelError, LocalModelServer, smollm2_gguf
from tests.helpers import eventually
from tests.other_user import OtherUser

# Run as the other user (stdlib only): every way it could take the port, whether it can use the model without the
# key, and whether it can read the key from the server's process.
ATTACKER = r"""
import json, socket, sys, urllib.error, urllib.request
port, pid = int(sys.argv[1]), int(sys.argv[2])
binds = {}
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    for option in ("none", "SO_REUSEADDR", "SO_REUSEPORT"):
        s = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # [::] covers 127.0.0.1 too
        if option != "none":
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, option), 1)
        try:
            s.bind((host, port))
            s.listen()
            binds[f"{host} {option}"] = "bound"
        except OSError as exc:
            binds[f"{host} {option}"] = exc.strerror
        s.close()
try:
    status = urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5).status
except urllib.error.HTTPError as exc:
    status = exc.code
except OSError as exc:
    status = str(exc)
try:
    environ = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
except OSError as exc:
    environ = exc.strerror
try:
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
except OSError as exc:  # the server is gone
    cmdline = exc.strerror
print(json.dumps({"binds": binds, "status": status, "environ": environ, "cmdline": cmdline}))
"""

# A server that answers in the model's place and writes down every request it gets. "any": it answers everyone;
# "any-key": it refuses a request without a key and answers any key (as if it were Confide's server).
IMPOSTOR = r"""
import argparse, json, socket, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
parser = argparse.ArgumentParser()
parser.add_argument("--mode", choices=["any", "any-key"], required=True)
parser.add_argument("--port", type=int)
parser.add_argument("--fd", type=int)
args, _ = parser.parse_known_args()

class Handler(BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode(errors="replace")
        auth = self.headers.get("Authorization")
        print("REQUEST " + json.dumps({"method": self.command, "path": self.path, "auth": auth, "body": body}),
              flush=True)
        if args.mode == "any-key" and not auth:
            self.send_response(401)
            self.end_headers()
            return
        data = {"object": "list", "data": [{"id": "local", "object": "model"}]}
        if self.command == "POST":
            data = {"id": "x", "object": "chat.completion", "created": 0, "model": "local",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "the impostor's answer"}}]}
        payload = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = answer

    def log_message(self, *_):
        pass

if args.fd is not None:  # on the socket Confide hands its server
    server = HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=args.fd)
else:
    server = HTTPServer(("127.0.0.1", args.port), Handler)
print("LISTENING", flush=True)
server.serve_forever()
"""


async def attack(user: OtherUser, port: int, pid: int) -> dict[str, object]:
    attacker = user.popen("-c", ATTACKER, str(port), str(pid))
    out, err = await asyncio.to_thread(attacker.communicate, timeout=60)
    assert attacker.returncode == 0, err
    result: dict[str, object] = json.loads(out)
    return result


def assert_port_refused(attempt: dict[str, object]) -> None:
    binds = attempt["binds"]
    assert isinstance(binds, dict) and len(binds) == 9
    assert "bound" not in binds.values(), binds


def requests_seen(output: str) -> list[dict[str, str]]:
    return [json.loads(line.removeprefix("REQUEST ")) for line in output.splitlines() if line.startswith("REQUEST ")]


def local_settings(**fields: object) -> LocalModelSettings:
    values: dict[str, object] = {
        "gguf_path": smollm2_gguf(), "context": 512, "max_tokens": 8, "threads": 1, "startup_timeout_s": 60,
    }  # fmt: skip
    values.update(fields)
    return LocalModelSettings.model_validate(values)


def port_is_free(port: int) -> bool:
    """Nothing listens there any more (connections Confide closed may still wait in TIME_WAIT)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
    return True


async def answer(client: ModelClient, question: str) -> str:
    text = ""
    async for event in client.stream("local", [{"role": "user", "content": question}]):
        if isinstance(event, Delta):
            text += event.text
    return text


async def test_another_user_can_neither_take_the_port_nor_use_the_model(tmp_path: Path, other_user: OtherUser) -> None:
    """From the moment the server is started until Confide stops it (and after it died), the port is Confide's:
    the other user cannot bind it in any way, gets 401 without the key, and cannot read the key; Confide's own
    answers come from the real SmolLM2 server."""
    server = LocalModelServer(local_settings(), tmp_path / "local-model.log")
    starting = asyncio.create_task(server.start())
    await eventually(lambda: server._process is not None or starting.done())  # the model may still be loading
    assert server._process is not None, starting.exception()
    pid = server._process.pid
    during_start = await attack(other_user, server.port, pid)
    await starting
    try:
        assert_port_refused(during_start)
        served = await attack(other_user, server.port, pid)
        assert_port_refused(served)
        assert served["status"] == 401  # reached the server, which refused it: no key
        assert served["environ"] == "Permission denied"
        assert server.key not in str(served["cmdline"]) and "bridge.models.local_model" in str(served["cmdline"])

        client = ModelClient({"local": server.model_settings})
        try:
            assert (await answer(client, "Say hello.")).strip()

            os.kill(pid, signal.SIGKILL)  # the server dies (a crash, the OOM killer): its port stays Confide's
            await eventually(lambda: server._refusing)
            assert_port_refused(await attack(other_user, server.port, pid))
            started = time.monotonic()
            with pytest.raises(ModelUnavailable):
                await answer(client, "Say hello.")
            assert time.monotonic() - started < 10, "a request to a dead server must fail at once, not wait"
        finally:
            await client.close()
    finally:
        await server.stop()
    assert port_is_free(server.port), "Confide keeps the port only while it runs"


async def test_a_server_already_on_the_fixed_port_is_never_used(tmp_path: Path, other_user: OtherUser) -> None:
    """The other user's server listens on the configured port before Confide starts: Confide refuses to start its
    model there, with a clear error, and that server gets no request at all."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    impostor = other_user.popen("-c", IMPOSTOR, "--mode", "any", "--port", str(port))
    try:
        assert impostor.stdout is not None
        assert (await asyncio.to_thread(impostor.stdout.readline)).strip() == "LISTENING"
        server = LocalModelServer(local_settings(port=port), tmp_path / "local-model.log")
        with pytest.raises(LocalModelError, match=f"cannot listen on 127.0.0.1:{port}.*another process holds"):
            await server.start()
        assert server._process is None, "no model server may start beside another's"
    finally:
        impostor.terminate()
        out, _ = await asyncio.to_thread(impostor.communicate, timeout=10)
    assert requests_seen(out) == []


class ImpostorOnConfidesSocket(LocalModelServer):
    """What would answer if something other than llama.cpp's server with Confide's key got Confide's socket."""

    mode = "any"

    def arguments(self, gguf: Path, fd: int) -> list[str]:
        return [sys.executable, "-c", IMPOSTOR, "--mode", self.mode, "--fd", str(fd)]


@pytest.mark.parametrize("mode", ["any", "any-key"])
async def test_a_server_that_does_not_require_confides_key_gets_no_prompt(tmp_path: Path, mode: str) -> None:
    """Readiness is 401 without a key, 401 with a made-up one and 200 with Confide's: a server answering anyone
    (or any key) is refused with a clear error, is stopped, and never sees a prompt nor Confide's key."""
    log_path = tmp_path / "local-model.log"
    server = ImpostorOnConfidesSocket(local_settings(), log_path)
    server.mode = mode
    with pytest.raises(LocalModelError, match=r"refusing the model server .* not Confide's own: it gets neither"):
        await server.start()
    seen = requests_seen(log_path.read_text())
    assert seen, "the impostor was asked nothing: the test proves nothing"
    assert all(r["method"] == "GET" and r["path"] == "/v1/models" for r in seen), seen
    assert all(server.key not in (r["auth"] or "") for r in seen), "Confide's key went to the impostor"
    assert server._process is None and port_is_free(server.port)


def test_the_server_never_serves_without_a_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONFIDE_LOCAL_MODEL_KEY"}
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        fd = listener.fileno()
        done = subprocess.run(
            [sys.executable, "-m", "bridge.models.local_model", "serve", "--fd", str(fd),
             "--model", str(smollm2_gguf()), "--model_alias", "local", "--n_ctx", "512", "--n_threads", "1",
             "--n_threads_batch", "1"],
            env=env, pass_fds=(fd,), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert "never serves without Confide's key" in done.stderr
