"""The CLI's way into a running `confide serve`: its history over a local socket, while it answers.

The embedded index belongs to one process. When `confide serve` holds it, `confide import`, `forget`, `export`
and `count` hand their store calls to it over `DATA_DIR/confide.sock` (a Unix socket, mode 0600, in the user's
own data directory; a peer of another uid is refused), and show progress and summaries as they do on their own.
The CLI still reads the files itself: only records cross the socket.

Protocol: one JSON request per line, {"op": ..., ...}; one JSON reply per line ({"ok": result}, or {"error": why});
"export" replies with one {"record": ...} per line and then {"ok": count}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.history.index import HistoryIndex
from bridge.history.store import Selector
from bridge.messages import HistoryRecord

log = logging.getLogger(__name__)

SOCKET_NAME = "confide.sock"
LINE_LIMIT = 64 * 1024 * 1024  # one request: a batch of records with their text


class ControlError(Exception):
    pass


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def selector_json(selector: Selector | None) -> dict[str, Any] | None:
    if selector is None:
        return None
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(selector).items()}


def selector_of(data: dict[str, Any] | None) -> Selector | None:
    if data is None:
        return None
    for key in ("since", "until"):
        if data.get(key):
            data[key] = datetime.fromisoformat(data[key])
    return Selector(**data)


# -- the running process's side -------------------------------------------------------------------


class ControlServer:
    """Serves the history of the running process to the CLI of the same user."""

    def __init__(self, history: HistoryIndex, data_dir: Path) -> None:
        self.history = history
        self.path = socket_path(data_dir)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a process that was killed; the data directory lock is held by now
        old = os.umask(0o177)  # the socket is created 0600: no window in which another user may connect
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=LINE_LIMIT)
        finally:
            os.umask(old)
        log.info("CLI jobs (import, forget, export) are taken on %s", self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _same_user(writer):
                log.warning("refused a control connection from another user")
                return
            while line := await reader.readline():
                await self._answer(json.loads(line), writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            log.warning("control connection ended: %r", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        op, person = request.get("op"), str(request.get("person", ""))
        try:
            if op == "export":
                count = 0
                async for record in self.history.export(person):
                    writer.write(_line({"record": record.model_dump(mode="json")}))
                    count += 1
                    if count % 200 == 0:
                        await writer.drain()
                result: Any = count
            elif op == "add":
                records = [HistoryRecord.model_validate(r) for r in request["records"]]
                result = await self.history.add(person, records)
            elif op == "existing":
                result = sorted(await self.history.existing(person, request["ids"]))
            elif op == "count":
                result = await self.history.count(person, selector_of(request.get("selector")))
            elif op == "forget":
                selector = selector_of(request.get("selector"))
                assert selector is not None, "forget needs a selector"
                result = await self.history.forget(person, selector)
                log.info("forgot %d record(s) of %s (%s) for the CLI", result, person, selector.describe())
            else:
                raise ControlError(f"unknown operation {op!r}")
        except Exception as exc:
            log.exception("CLI job %s for %s failed", op, person)
            writer.write(_line({"error": f"{type(exc).__name__}: {exc}"}))
        else:
            writer.write(_line({"ok": result}))
        await writer.drain()


def _same_user(writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return False
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode() + b"\n"


# -- the CLI's side -------------------------------------------------------------------------------


class RemoteHistory:
    """The store calls of the CLI (what bridge.history.ingest and the commands use), made by the running process."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, data_dir: Path) -> RemoteHistory | None:
        """The running process's history, or None when no process takes jobs there."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(socket_path(data_dir)), limit=LINE_LIMIT)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        return cls(reader, writer)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def add(self, person: str, records: Sequence[HistoryRecord]) -> int:
        return int(await self._call("add", person, records=[r.model_dump(mode="json") for r in records]))

    async def existing(self, person: str, record_ids: Sequence[str]) -> set[str]:
        return set(await self._call("existing", person, ids=list(record_ids)))

    async def count(self, person: str, selector: Selector | None = None) -> int:
        return int(await self._call("count", person, selector=selector_json(selector)))

    async def forget(self, person: str, selector: Selector) -> int:
        return int(await self._call("forget", person, selector=selector_json(selector)))

    async def export(self, person: str) -> AsyncIterator[HistoryRecord]:
        async with self._lock:
            self._writer.write(_line({"op": "export", "person": person}))
            await self._writer.drain()
            while True:
                reply = await self._reply()
                if "record" not in reply:
                    self._result(reply)
                    return
                yield HistoryRecord.model_validate(reply["record"])

    async def _call(self, op: str, person: str, **fields: Any) -> Any:
        async with self._lock:
            self._writer.write(_line({"op": op, "person": person, **fields}))
            await self._writer.drain()
            return self._result(await self._reply())

    async def _reply(self) -> dict[str, Any]:
        line = await self._reader.readline()
        if not line:
            raise ControlError("the running Confide closed the connection (did it stop?)")
        reply: dict[str, Any] = json.loads(line)
        return reply

    @staticmethod
    def _result(reply: dict[str, Any]) -> Any:
        if "error" in reply:
            raise ControlError(f"the running Confide could not do it: {reply['error']}")
        return reply["ok"]
