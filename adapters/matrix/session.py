"""Logging in to the homeserver as Confide's device: restore the stored device, or log in once and store it.

The live adapter and `confide import matrix` share this, so both use the same device, crypto store
and keys. Secrets (password, access token) are never logged.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nio import AsyncClient, AsyncClientConfig, ErrorResponse, KeysUploadError, LoginResponse, WhoamiResponse

from adapters.matrix.settings import matrix_settings
from adapters.matrix.state import Credentials, store_dir
from bridge.config import Settings

log = logging.getLogger(__name__)


class MatrixLoginError(Exception):
    pass


def new_client(settings: Settings, device_id: str | None = None) -> AsyncClient:
    matrix = matrix_settings(settings)
    assert matrix.homeserver and matrix.user_id, "MatrixSettings validation guarantees these when enabled"
    directory = store_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    # Unlimited 429 retries inside nio: its own key-sharing requests must not be dropped on a rate limit.
    config = AsyncClientConfig(
        encryption_enabled=True, store_sync_tokens=False, max_limit_exceeded=None, request_timeout=60
    )
    # aiohttp reads no proxy variables (trust_env is off by default); only a configured proxy is used.
    return AsyncClient(
        matrix.homeserver, matrix.user_id, device_id or "", str(directory), config=config, proxy=settings.proxy_url
    )


async def login(settings: Settings) -> AsyncClient:
    """A logged-in client with its crypto store loaded and its device keys published."""
    matrix = matrix_settings(settings)
    assert matrix.user_id
    directory = store_dir(settings)
    stored = Credentials.load(directory, matrix.user_id)
    if stored is not None:
        client = new_client(settings, stored.device_id)
        client.restore_login(stored.user_id, stored.device_id, stored.access_token)
        if isinstance(await client.whoami(), WhoamiResponse):
            return await _ready(client)
        log.warning("stored Matrix session of %s is no longer valid; logging in again", matrix.user_id)
        await client.close()
        client = new_client(settings, stored.device_id)  # same device: the crypto store stays valid
    else:
        client = new_client(settings)
    await _fresh_login(settings, client, directory)
    return await _ready(client)


async def _fresh_login(settings: Settings, client: AsyncClient, directory: Path) -> None:
    matrix = matrix_settings(settings)
    assert matrix.user_id
    if matrix.access_token is not None:
        token = matrix.access_token.get_secret_value()
        client.access_token = token
        whoami = await client.whoami()
        if not isinstance(whoami, WhoamiResponse) or not whoami.device_id:
            await client.close()
            raise MatrixLoginError(f"the configured Matrix access token for {matrix.user_id} was refused: {whoami}")
        client.restore_login(matrix.user_id, whoami.device_id, token)
    elif matrix.password is not None:
        response = await client.login(matrix.password.get_secret_value(), device_name=matrix.device_name)
        if not isinstance(response, LoginResponse):
            await client.close()
            raise MatrixLoginError(f"Matrix login of {matrix.user_id} failed: {response}")
    else:
        await client.close()
        raise MatrixLoginError(f"no valid stored session for {matrix.user_id} and no password or access token")
    Credentials(matrix.user_id, client.device_id, client.access_token).save(directory)
    log.info("logged in to Matrix as %s, device %s", matrix.user_id, client.device_id)


async def _ready(client: AsyncClient) -> AsyncClient:
    if client.should_upload_keys:
        response = await client.keys_upload()
        if isinstance(response, (KeysUploadError, ErrorResponse)):
            log.error("uploading the device keys of %s failed: %s", client.user_id, response)
    return client
