"""A file a person sent over Matrix, fetched for import: downloaded, decrypted where the room is encrypted,
checked against its hash, and saved under the data directory without ever leaving half a file."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from nio import AsyncClient, MemoryDownloadResponse
from nio.crypto.attachments import decrypt_attachment
from nio.exceptions import EncryptionError

from adapters.attachments import write_atomically
from adapters.matrix.events import as_dict

log = logging.getLogger(__name__)

# A chat is no way to move an archive of gigabytes (`confide import` is): bigger files are not fetched.
MAX_FILE_BYTES = 200 * 1024 * 1024
# A stalled download must not hold the sync (nio's download has no timeout of its own).
FETCH_TIMEOUT_S = 300.0


class FileUnavailable(Exception):
    """The file cannot be had: too big, gone from the homeserver, or its encryption does not check out."""


async def fetch(client: AsyncClient, content: dict[str, Any], path: Path) -> int:
    """Download the file of an m.file event's content to `path`; its size in bytes."""
    encrypted = as_dict(content.get("file")) or None
    url = (encrypted or content).get("url")
    if not isinstance(url, str) or not url.startswith("mxc://"):
        raise FileUnavailable("the message carries no file address")
    info = as_dict(content.get("info"))
    if isinstance(info.get("size"), int) and info["size"] > MAX_FILE_BYTES:
        raise FileUnavailable(
            f"it is {info['size'] // 2**20} MB; files over {MAX_FILE_BYTES // 2**20} MB are not fetched"
        )
    response = await client.download(mxc=url)
    if not isinstance(response, MemoryDownloadResponse):
        raise FileUnavailable(f"the homeserver did not give it: {response}")
    data = response.body
    if len(data) > MAX_FILE_BYTES:
        raise FileUnavailable(f"it is over the {MAX_FILE_BYTES // 2**20} MB fetched")
    if encrypted is not None:
        data = await asyncio.to_thread(_decrypt, data, encrypted)  # megabytes of AES and SHA-256: off the loop
    await asyncio.to_thread(write_atomically, path, data)
    return len(data)


def _decrypt(data: bytes, file: dict[str, Any]) -> bytes:
    try:
        return decrypt_attachment(data, file["key"]["k"], file["hashes"]["sha256"], file["iv"])
    except (KeyError, TypeError) as exc:
        raise FileUnavailable(f"the file's keys are incomplete (missing {exc})") from None
    except EncryptionError as exc:  # the SHA-256 of what came does not match what the sender sent
        raise FileUnavailable(f"the file does not match its hash: {exc}") from None
