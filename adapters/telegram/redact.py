"""Keep the bot token out of every log line: the Bot API puts it in each URL (httpx logs them at INFO)."""

from __future__ import annotations

import logging

REDACTED = "<telegram-token>"
# Loggers whose records may carry request URLs or exception texts with the token in them.
_PREFIXES = ("httpx", "httpcore", "telegram", "aiohttp", "adapters.telegram", "bridge")


class TokenRedactor(logging.Filter):
    """Rewrites a record's message and exception text with every known token replaced."""

    def __init__(self) -> None:
        super().__init__("telegram-token-redactor")
        self.tokens: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.tokens:
            return True
        message = record.getMessage()
        cleaned = self.redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True

    def redact(self, text: str) -> str:
        for token in self.tokens:
            text = text.replace(token, REDACTED)
        return text


REDACTOR = TokenRedactor()


def install(token: str) -> None:
    """Filter the token out of records of the loggers that could carry it, and out of the root handlers.

    Logger filters see records logged on that very logger only, so every existing logger under the
    prefixes gets one; the root handlers' filter catches whatever propagates from elsewhere.
    """
    REDACTOR.tokens.add(token)
    names = [n for n in logging.root.manager.loggerDict if n.startswith(_PREFIXES)]
    for logger in [logging.getLogger(n) for n in (*_PREFIXES, *names)]:
        if REDACTOR not in logger.filters:
            logger.addFilter(REDACTOR)
    for handler in logging.getLogger().handlers:
        if REDACTOR not in handler.filters:
            handler.addFilter(REDACTOR)
