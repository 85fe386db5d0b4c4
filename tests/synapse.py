"""A private Synapse homeserver on loopback for the Matrix tests: start, register users, stop.

Installed by scripts/services/synapse.sh into its own virtual environment. Its data lives on tmpfs
(/dev/shm) where there is one: on disk every message round trip costs 100-200 ms instead of ~50 ms.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    Event,
    JoinResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomPreset,
    RoomSendResponse,
    SyncResponse,
    TypingNoticeEvent,
)
from nio.store import SqliteMemoryStore

SERVER_NAME = "localhost"
SYNAPSE_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "confide-services" / "synapse"
SYNAPSE_PYTHON = SYNAPSE_ROOT / "venv" / "bin" / "python"
_GENEROUS = {"per_second": 1000, "burst_count": 1000}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(root: Path, port: int, secret: str) -> dict[str, Any]:
    return {
        "server_name": SERVER_NAME,
        "pid_file": str(root / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(root / "homeserver.db")}},
        "log_config": str(root / "log.yaml"),
        "media_store_path": str(root / "media"),
        "signing_key_path": str(root / "signing.key"),
        "registration_shared_secret": secret,
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "enable_metrics": False,
        "bcrypt_rounds": 4,
        "presence": {"enabled": False},
        "rc_message": _GENEROUS,
        "rc_login": {"address": _GENEROUS, "account": _GENEROUS, "failed_attempts": _GENEROUS},
        "rc_registration": _GENEROUS,
        "rc_joins": {"local": _GENEROUS, "remote": _GENEROUS},
        "rc_joins_per_room": _GENEROUS,
        "rc_invites": {"per_room": _GENEROUS, "per_user": _GENEROUS, "per_issuer": _GENEROUS},
        "rc_key_requests": _GENEROUS,
        "rc_room_creation": _GENEROUS,
        "rc_admin_redaction": _GENEROUS,
    }


def _log_config(root: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(root / "homeserver.log"), "formatter": "plain"}
        },
        "root": {"level": "WARNING", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


class Synapse:
    def __init__(self) -> None:
        base = "/dev/shm" if Path("/dev/shm").is_dir() else None
        self.root = Path(tempfile.mkdtemp(prefix="confide-synapse-", dir=base))
        self.port = _free_port()
        self.secret = secrets.token_hex(16)
        self.process: asyncio.subprocess.Process | None = None
        self.admin_token = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, within_s: float = 60.0) -> Synapse:
        if not SYNAPSE_PYTHON.exists():
            raise RuntimeError(f"Synapse is not installed at {SYNAPSE_ROOT}: run scripts/services/synapse.sh")
        # YAML is a superset of JSON: no YAML writer needed.
        (self.root / "homeserver.yaml").write_text(json.dumps(_config(self.root, self.port, self.secret)))
        (self.root / "log.yaml").write_text(json.dumps(_log_config(self.root)))
        seed = base64.b64encode(os.urandom(32)).decode().rstrip("=")
        (self.root / "signing.key").write_text(f"ed25519 a_test {seed}\n")
        self.process = await asyncio.create_subprocess_exec(
            str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(self.root / "homeserver.yaml"),
            cwd=self.root, stdout=asyncio.subprocess.DEVNULL, stderr=(self.root / "stderr.log").open("wb"),
        )  # fmt: skip
        await self._wait_healthy(within_s)
        self.admin_token = (await self.register("admin", admin=True))["access_token"]
        return self

    async def _wait_healthy(self, within_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + within_s
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise RuntimeError(f"Synapse exited: {(self.root / 'stderr.log').read_text()[-2000:]}")
                try:
                    async with http.get(f"{self.url}/health") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError("Synapse did not become healthy in time")
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    async def register(self, localpart: str, password: str = "secret-password", admin: bool = False) -> dict[str, Any]:
        """A user through the shared-secret admin API: user_id, access_token, device_id."""
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.url}/_synapse/admin/v1/register") as response:
                nonce = (await response.json())["nonce"]
            mac = hmac.new(self.secret.encode(), digestmod=hashlib.sha1)
            mac.update(
                b"\x00".join(
                    [nonce.encode(), localpart.encode(), password.encode(), b"admin" if admin else b"notadmin"]
                )
            )
            body = {"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac.hexdigest()}
            async with http.post(f"{self.url}/_synapse/admin/v1/register", json=body) as response:
                result = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"registering {localpart} failed: {result}")
                return dict(result)

    async def override_ratelimit(self, user_id: str, messages_per_second: float, burst_count: int) -> None:
        """Lower one user's message rate limit, so that Synapse answers its sends with 429."""
        body = {"messages_per_second": messages_per_second, "burst_count": burst_count}
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        path = f"{self.url}/_synapse/admin/v1/users/{user_id}/override_ratelimit"
        async with aiohttp.ClientSession() as http, http.post(path, json=body, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"override_ratelimit failed: {await response.text()}")


class Person:
    """A person's Matrix client (nio, E2EE, in-memory crypto store) that syncs in the background."""

    def __init__(self, synapse: Synapse, localpart: str) -> None:
        self.synapse = synapse
        self.localpart = localpart
        self.events: dict[str, list[Event]] = {}
        self.typing: dict[str, set[str]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Person:
        account = await self.synapse.register(self.localpart)
        self.user_id = account["user_id"]
        config = AsyncClientConfig(store=SqliteMemoryStore, encryption_enabled=True)
        self.client = AsyncClient(self.synapse.url, self.user_id, account["device_id"], config=config)
        self.client.restore_login(self.user_id, account["device_id"], account["access_token"])
        await self.client.keys_upload()
        await self.client.sync(timeout=0)
        self._task = asyncio.create_task(self._sync_forever())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.close()

    async def _sync_forever(self) -> None:
        while True:
            response = await self.client.sync(timeout=1000)
            if not isinstance(response, SyncResponse):
                await asyncio.sleep(0.2)
                continue
            for room_id, info in response.rooms.join.items():
                self.events.setdefault(room_id, []).extend(info.timeline.events)
                for event in info.ephemeral:
                    if isinstance(event, TypingNoticeEvent):
                        self.typing.setdefault(room_id, set()).update(event.users)
            await self.housekeeping()

    async def housekeeping(self) -> None:
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        if self.client.should_query_keys:
            await self.client.keys_query()
        if self.client.should_claim_keys:
            await self.client.keys_claim(self.client.get_users_for_key_claiming())
        await self.client.send_to_device_messages()

    async def create_room(self, invite: tuple[str, ...] = (), encrypted: bool = False, name: str | None = None) -> str:
        state = [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]
        response = await self.client.room_create(
            name=name, invite=list(invite), is_direct=len(invite) == 1, preset=RoomPreset.private_chat,
            initial_state=state if encrypted else [],
        )  # fmt: skip
        assert isinstance(response, RoomCreateResponse), response
        await eventually_true(lambda: response.room_id in self.client.rooms)
        return str(response.room_id)

    async def join(self, room_id: str) -> None:
        await eventually_true(lambda: room_id in self.client.invited_rooms)
        assert isinstance(await self.client.join(room_id), JoinResponse)
        await eventually_true(lambda: room_id in self.client.rooms)

    async def invite(self, room_id: str, user_id: str) -> None:
        assert isinstance(await self.client.room_invite(room_id, user_id), RoomInviteResponse)

    def joined(self, room_id: str, user_id: str) -> bool:
        room = self.client.rooms.get(room_id)
        return room is not None and user_id in room.users and user_id not in room.invited_users

    async def send(self, room_id: str, body: str, **content: Any) -> str:
        await self.housekeeping()  # the room's devices are known before a megolm session is shared
        message = {"msgtype": "m.text", "body": body, **content}
        response = await self.client.room_send(room_id, "m.room.message", message, ignore_unverified_devices=True)
        assert isinstance(response, RoomSendResponse), response
        return str(response.event_id)

    def from_user(self, room_id: str, user_id: str) -> list[Event]:
        return [e for e in self.events.get(room_id, []) if getattr(e, "sender", None) == user_id]


async def eventually_true(predicate: Callable[[], Any], within_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
