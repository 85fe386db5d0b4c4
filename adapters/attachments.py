"""Files people send to Confide: a name that stays inside its folder, and a write that never leaves half a file."""

from __future__ import annotations

import re
from pathlib import Path

_UNSAFE_NAME = re.compile(r"[^\w.\- ]+")


def safe_name(name: str, fallback: str = "attachment") -> str:
    """The file's own name without any folder it claims, reduced to characters safe on every file system."""
    cleaned = _UNSAFE_NAME.sub("_", Path(name.replace("\\", "/")).name).strip(" .")
    return cleaned[:120] or fallback


def write_atomically(path: Path, data: bytes) -> None:
    """A crash mid-write leaves a `.part` file, never a truncated file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.replace(path)
