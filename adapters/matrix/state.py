"""What the Matrix adapter keeps between runs, beside nio's crypto store: credentials and sync state.

Both files are written atomically (temp file, fsync, rename) so a crash leaves the old or the new
version, never half of one. Credentials are readable by the owner only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.attachments import write_atomically
from adapters.matrix.settings import matrix_settings
from bridge.config import Settings


def store_dir(settings: Settings) -> Path:
    return matrix_settings(settings).store_dir or settings.data_dir / "matrix"


def write_json(path: Path, data: dict[str, Any], private: bool = False) -> None:
    write_atomically(path, json.dumps(data).encode("utf-8"), private=private)


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return {}


@dataclass
class Credentials:
    """The device Confide logged in as; reused so the crypto store and transaction ids stay valid."""

    user_id: str
    device_id: str
    access_token: str

    @classmethod
    def load(cls, directory: Path, user_id: str) -> Credentials | None:
        data = _read(directory / "credentials.json")
        if data.get("user_id") != user_id or not data.get("device_id") or not data.get("access_token"):
            return None
        return cls(data["user_id"], data["device_id"], data["access_token"])

    def save(self, directory: Path) -> None:
        write_json(directory / "credentials.json", self.__dict__, private=True)


@dataclass
class SyncState:
    """The sync token, encrypted events still waiting for their keys, and whom we told about them."""

    path: Path
    next_batch: str | None = None
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # event id -> {"room_id", "event"}
    told: list[str] = field(default_factory=list)  # "room_id|session_id" already explained to the person

    @classmethod
    def load(cls, directory: Path) -> SyncState:
        path = directory / "sync.json"
        data = _read(path)
        return cls(path, data.get("next_batch"), dict(data.get("pending", {})), list(data.get("told", [])))

    def save(self) -> None:
        data = {"next_batch": self.next_batch, "pending": self.pending, "told": self.told[-1000:]}
        write_json(self.path, data)
