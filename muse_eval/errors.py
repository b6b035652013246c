"""Every error muse-eval raises on purpose.

The hierarchy, so that callers can catch broadly and recover narrowly::

    MuseError
    ├── ConfigError            a flag, profile or option is wrong
    ├── TaskError              a task definition or its data is unusable
    ├── StoreError             the results database cannot be used
    │   └── StoreLocked        another process holds the database
    ├── BudgetExceeded         the run reached --max-cost
    └── ProviderError          a model backend failed a request
        ├── RateLimited        429: retried after the server's Retry-After
        ├── Transient          5xx, timeouts, resets, malformed replies: retried
        │   └── Unreachable    nothing answers at the base URL
        ├── AuthFailed         401/403: the run stops at once
        └── BadRequest         400: the unit is recorded as failed, not retried
            └── ContextTooLong the conversation does not fit the model's context

Every message is one sentence that names the problem and, where there is one, the
fix. No message ever contains an API key.
"""

from __future__ import annotations

__all__ = [
    "AuthFailed",
    "BadRequest",
    "BudgetExceeded",
    "ConfigError",
    "ContextTooLong",
    "MuseError",
    "ProviderError",
    "RateLimited",
    "StoreError",
    "StoreLocked",
    "TaskError",
    "Transient",
    "Unreachable",
]


class MuseError(Exception):
    """Base class of every error muse-eval raises deliberately."""


class ConfigError(MuseError):
    """A command-line flag, provider profile or option is invalid."""


class TaskError(MuseError):
    """A task definition or its data cannot be used."""


class StoreError(MuseError):
    """The results database cannot be opened, written or read."""


class StoreLocked(StoreError):
    """Another process holds the write lock on the results database."""


class BudgetExceeded(MuseError):
    """The run's cost reached the budget set with --max-cost."""


class ProviderError(MuseError):
    """A model backend failed to answer a request."""

    #: Short machine-readable failure kind, stored with failed units.
    kind: str = "provider_error"


class RateLimited(ProviderError):
    """The backend throttled the request (HTTP 429)."""

    kind = "rate_limited"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Transient(ProviderError):
    """A failure that may succeed when retried (5xx, timeout, reset, bad JSON)."""

    kind = "transient"


class Unreachable(Transient):
    """Nothing answers at the provider's base URL."""

    kind = "unreachable"


class AuthFailed(ProviderError):
    """The backend rejected the credentials (HTTP 401 or 403)."""

    kind = "auth_failed"


class BadRequest(ProviderError):
    """The backend rejected the request itself (HTTP 400); retrying cannot help."""

    kind = "bad_request"


class ContextTooLong(BadRequest):
    """The conversation is longer than the model's context window."""

    kind = "context_too_long"
