"""Telegram's settings section: CONFIDE_TELEGRAM__*."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator


class TelegramSettings(BaseModel):
    enabled: bool = False
    token: SecretStr | None = Field(None, description="Bot token from @BotFather; never logged")
    mode: Literal["polling", "webhook"] = "polling"
    api_base_url: str = Field("https://api.telegram.org", description="Bot API server (a local one in tests)")
    poll_timeout_s: int = Field(30, ge=0, le=60)
    webhook_url: str | None = Field(None, description="Public HTTPS URL Telegram posts updates to")
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(8443, ge=1, le=65535)
    webhook_secret: SecretStr | None = Field(None, description="secret_token Telegram must send back")
    edit_interval_s: float = Field(1.0, ge=0.05, description="Least seconds between two updates of a streaming answer")
    drafts: bool = Field(True, description="Stream in private chats with sendMessageDraft instead of edits")

    @model_validator(mode="after")
    def _complete(self) -> TelegramSettings:
        if self.enabled and self.token is None:
            raise ValueError("token is required when Telegram is enabled")
        if self.enabled and self.mode == "webhook" and not (self.webhook_url and self.webhook_secret):
            raise ValueError("webhook mode needs webhook_url and webhook_secret")
        return self
