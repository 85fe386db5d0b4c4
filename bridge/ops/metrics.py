"""Confide's own Prometheus metrics, served on a loopback port when CONFIDE_METRICS__PORT is set, with its health.

An own registry (not the process-global one), so nothing a library registers is exposed, and tests can
build several bridges in one process. Beside /metrics: /healthz (the process answers) and /readyz (the bridge
takes and answers messages: not while it starts or stops), for the compose healthcheck and the systemd unit.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import SecretStr

from bridge.intake.platforms import channels
from bridge.ops.diskspace import DiskRoom

log = logging.getLogger(__name__)

LISTEN = "127.0.0.1"
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)


class MetricsPortError(Exception):
    pass


QUEUE_DEPTH = "SELECT channel, COUNT(*) FROM inbox WHERE status!='done' GROUP BY channel"


class _QueueDepth(Collector):
    """Unfinished inbox messages per channel, counted at scrape time from the state database (SQLite's WAL: no
    lock; PostgreSQL: a connection of the scrape's own)."""

    def __init__(self, state_path: Path | None, state_url: SecretStr | None = None) -> None:
        self.state_path = state_path
        self.state_url = state_url

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        if self.state_url is None and (self.state_path is None or not self.state_path.exists()):
            yield family
            return
        depth = dict.fromkeys(channels(), 0)  # an empty queue reads 0, not "no data"
        try:
            depth.update(self._count() if self.state_url is None else self._count_postgres(self.state_url))
        except Exception as exc:
            log.warning("queue depth for metrics unreadable (%s: %s)", type(exc).__name__, exc)
            yield family
            return
        for channel, count in depth.items():
            family.add_metric([channel], count)
        yield family

    def _count(self) -> dict[str, int]:
        conn = sqlite3.connect(f"file:{self.state_path}?mode=ro", uri=True, timeout=1.0)
        try:
            return dict(conn.execute(QUEUE_DEPTH).fetchall())
        finally:
            conn.close()

    @staticmethod
    def _count_postgres(url: SecretStr) -> dict[str, int]:
        import psycopg

        with psycopg.connect(url.get_secret_value(), connect_timeout=2) as conn:
            return {str(channel): int(count) for channel, count in conn.execute(QUEUE_DEPTH).fetchall()}

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("confide_queue_depth", "Inbox messages not yet finished", labels=["channel"])


class Metrics:
    def __init__(self, state_path: Path | None = None, state_url: SecretStr | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "confide_messages", "Messages finished, by channel and outcome", ["channel", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "confide_answer_latency_seconds", "From taking a question to queuing its answer", ["model"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter("confide_tokens", "Model tokens, by model and kind", ["model", "kind"],
                              registry=self.registry)  # fmt: skip
        self.energy = Counter("confide_energy_wh", "GPU energy attributed to answers (Wh)", ["model"],
                              registry=self.registry)  # fmt: skip
        self.errors = Counter("confide_errors", "Errors, by kind", ["kind"], registry=self.registry)
        self.registry.register(_QueueDepth(state_path, state_url))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.ready = False  # set by the bridge once it takes messages, cleared when it stops
        self.room: DiskRoom | None = None  # the data directory's disk: below its floor, not ready (and said why)

    def message(self, channel: str, outcome: str) -> None:
        # "command: help" and "ignored: own message" count as command and ignored: few label values.
        self.messages.labels(channel, outcome.partition(":")[0]).inc()

    def answered(self, model: str, seconds: float) -> None:
        self.latency.labels(model).observe(seconds)

    def usage(self, model: str, prompt_tokens: int, completion_tokens: int, energy_wh: float | None) -> None:
        self.tokens.labels(model, "prompt").inc(prompt_tokens)
        self.tokens.labels(model, "completion").inc(completion_tokens)
        if energy_wh is not None:
            self.energy.labels(model).inc(energy_wh)

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def serve(self, port: int, token: str | None = None) -> None:
        """Serve /metrics, /healthz and /readyz on 127.0.0.1 only: the figures say when people talk to Confide. With a
        `token`, every request must carry it (`Authorization: Bearer`): loopback is open to every local user."""
        try:
            server = make_server(LISTEN, port, self._app(token), _ThreadingServer, handler_class=_QuietHandler)
        except OSError as exc:
            raise MetricsPortError(f"cannot serve metrics on {LISTEN}:{port} (CONFIDE_METRICS__PORT): {exc}") from None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="confide-metrics", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics (health: /healthz, /readyz)", LISTEN, port)

    def _app(self, token: str | None) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
        metrics = make_wsgi_app(self.registry)
        expected = f"Bearer {token}".encode() if token else None

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            given = environ.get("HTTP_AUTHORIZATION", "").encode()
            if expected is not None and not hmac.compare_digest(given, expected):
                start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                    ("WWW-Authenticate", 'Bearer realm="confide"')])  # fmt: skip
                return [b"a bearer token is required (CONFIDE_METRICS__TOKEN)\n"]
            path = environ.get("PATH_INFO", "")
            if path in ("/healthz", "/readyz"):
                ok, text = self.health(path == "/readyz")
                status = "200 OK" if ok else "503 Service Unavailable"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [text.encode() + b"\n"]
            return metrics(environ, start_response)

        return app

    def health(self, readiness: bool) -> tuple[bool, str]:
        """(ok, what to say): alive is always ok, but says when the disk is too full to take messages; ready also
        needs the bridge running and room on the disk."""
        low = self.room is not None and not self.room.has_room()
        disk = f"disk nearly full: {self.room.describe()}" if low and self.room is not None else ""
        if not readiness:
            return True, f"ok ({disk})" if disk else "ok"
        if not self.ready:
            return False, "not ready"
        return (False, f"not ready: {disk}") if disk else (True, "ok")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Health checks every few seconds are no news for the log."""
