"""What every Confide process does before anything else: telemetry and hub access off, files private.

Kept free of heavy imports (only `os`): `bridge/__init__.py` runs it on every import of the core, and the `confide`
executable (bridge/launch.py) runs before anything slow is loaded.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# Set before any ML library is imported: they read these at import time.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "VLLM_NO_USAGE_STATS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    # onnxruntime's Linux builds carry Microsoft's 1DS telemetry: a running encoder resolved and called
    # mobile.events.data.microsoft.com every few seconds. This stops it (disable_telemetry_events() alone did not).
    "ORT_DISABLE_TELEMETRY": "1",
}

# Files and folders only their owner may read, whatever the shell's umask (022 would make a history's WAL, the
# Qdrant pages and the state database readable by every local user). Native code (qdrant-edge, SQLite) follows the
# process umask too, so this covers what Confide does not open itself.
PRIVATE_UMASK = 0o077


class DataDirNotPrivate(Exception):
    """The data directory can be read or entered by other users; nothing was opened."""


def lock_down_environment() -> None:
    os.environ.update(OFFLINE_ENV)


def private_files() -> None:
    """From now on every file and folder this process creates is its owner's alone."""
    os.umask(PRIVATE_UMASK)


def ensure_private_dir(path: Path, setting: str = "CONFIDE_DATA_DIR") -> None:
    """Create `path` as 0700, or refuse one that exists and lets others in, with the command that fixes it.

    An existing folder is never chmod-ed behind the operator's back: its mode may be deliberate (a group backup
    job), and what it held while open is already exposed; they decide."""
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)  # whatever the umask of whoever started us
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise DataDirNotPrivate(
            f"{path} ({setting}) can be read by other users of this machine (mode {mode:04o}), and it holds your "
            f"history. Run:  chmod -R go-rwx {_quoted(path)}  and start Confide again."
        )


def _quoted(path: Path) -> str:
    text = str(path)
    return text if text.replace("/", "").replace("-", "").replace("_", "").replace(".", "").isalnum() else repr(text)
