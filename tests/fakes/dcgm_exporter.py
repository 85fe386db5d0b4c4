"""A local stand-in for NVIDIA's DCGM exporter: /metrics in the Prometheus text format, on loopback.

Each GPU draws a constant power, so its total-energy counter (mJ) rises linearly from the moment the
server starts: a known energy curve to check Confide's readings and attribution against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.fakes.loopback import serve_on_loopback

ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
POWER = "DCGM_FI_DEV_POWER_USAGE"


@dataclass
class FakeDcgm:
    watts: dict[int, float] = field(default_factory=lambda: {0: 300.0, 1: 100.0})
    base_mj: int = 5_000_000_000  # the counter counts since the driver loaded, not since we started
    scrapes: int = 0
    fail: bool = False
    port: int = 0
    _started: float = 0.0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def energy_mj(self, gpu: int) -> int:
        return self.base_mj + int(self.watts[gpu] * (time.monotonic() - self._started) * 1000)

    def exposition(self) -> str:
        lines = [
            f"# HELP {POWER} Power draw (in W).",
            f"# TYPE {POWER} gauge",
            *(f'{POWER}{{gpu="{g}",UUID="GPU-{g}",device="nvidia{g}",modelName="Fake H100",Hostname="t"}} {w:.6f}'
              for g, w in self.watts.items()),
            f"# HELP {ENERGY} Total energy consumption since boot (in mJ).",
            f"# TYPE {ENERGY} counter",
            *(f'{ENERGY}{{gpu="{g}",UUID="GPU-{g}",device="nvidia{g}",modelName="Fake H100",Hostname="t"}} '
              f"{self.energy_mj(g)}" for g in self.watts),
        ]  # fmt: skip
        return "\n".join(lines) + "\n"

    async def start(self) -> FakeDcgm:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner, self.port = await serve_on_loopback(app, self.port)
        self._started = time.monotonic()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        if self.fail:
            return web.Response(status=503, text="exporter down")
        return web.Response(text=self.exposition(), content_type="text/plain")
