"""Keep secrets out of everything muse-eval writes.

Each API key a provider reads is registered here. `redact` replaces every registered
secret in a text; the CLI passes error messages through it, the store passes stored
error text through it, and `RedactingFilter` does the same for every log record.
"""

from __future__ import annotations

import logging

__all__ = ["RedactingFilter", "redact", "register_secret"]

_SECRETS: set[str] = set()
_MASK = "***"


def register_secret(value: str | None) -> None:
    """Remember `value` so that it is masked wherever muse-eval writes text."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """Return `text` with every registered secret replaced by ``***``."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks registered secrets in each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with secrets masked; never drop it."""
        if _SECRETS:
            record.msg = redact(record.getMessage())
            record.args = None
        return True
