"""Files adapters keep: a name that stays inside its folder, and a write that never leaves half a file."""

from __future__ import annotations

import os
import re
from pathlib import Path

_UNSAFE_NAME = re.compile(r"[^\w.\- ]+")
MAX_NAME_BYTES = 120


def safe_name(name: str, fallback: str = "attachment") -> str:
    """The file's own name without any folder it claims, reduced to characters safe on every file system."""
    cleaned = _UNSAFE_NAME.sub("_", Path(name.replace("\\", "/")).name).strip(" .")
    # File systems count bytes (255 at most): 120 bytes leave room for a prefix, whatever the script. The
    # suffix stays: importers know a file by it.
    suffix = Path(cleaned).suffix if len(Path(cleaned).suffix.encode()) <= 16 else ""
    stem = cleaned[: len(cleaned) - len(suffix)].encode()[: MAX_NAME_BYTES - len(suffix.encode())]
    short = (stem.decode("utf-8", errors="ignore") + suffix).strip(" .")
    return short or fallback


def write_atomically(path: Path, data: bytes, private: bool = False) -> None:
    """A crash mid-write leaves the old file or the new one, never half of one: a `.part` file is written and
    flushed to disk, then renamed over the real name. `private` makes it readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
