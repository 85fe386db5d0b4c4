"""Matrix's settings section: CONFIDE_MATRIX__*."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, SecretStr, model_validator

from bridge.intake.platforms import section

if TYPE_CHECKING:
    from bridge.config import Settings


class MatrixSettings(BaseModel):
    enabled: bool = False
    homeserver: str | None = Field(None, description="e.g. https://matrix.example.org")
    user_id: str | None = Field(None, description="e.g. @confide:example.org")
    password: SecretStr | None = None
    access_token: SecretStr | None = None
    device_name: str = "Confide"
    store_dir: Path | None = Field(None, description="Device, sync token and crypto store; default DATA_DIR/matrix")
    sync_timeline_limit: int = Field(50, ge=1, le=1000, description="Events per room per sync; older ones are fetched")

    @model_validator(mode="after")
    def _complete(self) -> MatrixSettings:
        if self.enabled and not (self.homeserver and self.user_id and (self.password or self.access_token)):
            raise ValueError("Matrix needs homeserver, user_id and a password or access_token")
        return self


def matrix_settings(settings: Settings) -> MatrixSettings:
    """The Matrix section of the whole settings, typed."""
    return section(settings, "matrix", MatrixSettings)
