"""One retry policy and one adaptive concurrency limit for every provider.

Providers never retry on their own; every failure comes here, so throttling is seen
where the concurrency is decided. `AdaptiveLimit` halves the number of requests in
flight when the backend throttles and grows it by one after a run of successes, never
above the configured ceiling (additive increase, multiplicative decrease).

The policy's timing can be tuned without code through ``MUSE_RETRY_BASE`` (first
backoff, seconds), ``MUSE_RETRY_CAP`` (longest wait, seconds) and
``MUSE_RETRY_ATTEMPTS`` (attempts per request); tests shorten the waits this way.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

from muse_eval.errors import ConfigError, RateLimited, Transient

__all__ = ["AdaptiveLimit", "RetryPolicy"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AdaptiveLimit:
    """A concurrency limit that shrinks under throttling and recovers on success.

    Args:
        ceiling: The most requests ever in flight (``--max-concurrency``).
        grow_after: Successes in a row needed to allow one more request.
        cooldown: Seconds after a cut during which further 429s cut nothing.
    """

    def __init__(
        self, ceiling: int, *, grow_after: int = 20, cooldown: float = 1.0
    ) -> None:
        self.ceiling = ceiling
        self.grow_after = grow_after
        self.cooldown = cooldown
        self._last_cut = float("-inf")
        self._limiter = anyio.CapacityLimiter(ceiling)
        self._streak = 0

    @property
    def current(self) -> int:
        """The limit now in force."""
        return int(self._limiter.total_tokens)

    async def __aenter__(self) -> None:
        await self._limiter.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._limiter.release()

    def throttled(self) -> None:
        """Halve the limit (never below 1) after a 429.

        The requests in flight when the server started throttling all come back
        429 at about the same time; they are one signal, so the limit halves at
        most once per `cooldown` seconds.
        """
        self._streak = 0
        now = time.monotonic()
        if now - self._last_cut < self.cooldown:
            return
        self._last_cut = now
        new = max(1, self.current // 2)
        if new < self.current:
            logger.info("Throttled: concurrency %d -> %d", self.current, new)
            self._limiter.total_tokens = new

    def succeeded(self) -> None:
        """Count a success; raise the limit by one after enough in a row."""
        self._streak += 1
        if self._streak >= self.grow_after and self.current < self.ceiling:
            self._streak = 0
            self._limiter.total_tokens = self.current + 1


class RetryPolicy:
    """Exponential backoff with full jitter; 429s wait at least their Retry-After.

    Only `RateLimited` and `Transient` are retried. Everything else (an auth
    failure, a bad request) goes straight to the caller.

    Args:
        max_attempts: Attempts per request, the first included.
        base: First backoff in seconds; doubles per attempt.
        cap: Longest single wait in seconds.
    """

    def __init__(self, max_attempts: int = 8, base: float = 0.5, cap: float = 60.0):
        self.max_attempts = max_attempts
        self.base = base
        self.cap = cap

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        """The default policy, with ``MUSE_RETRY_*`` variables applied.

        Raises:
            ConfigError: A variable is not a positive number.
        """
        environ = os.environ if environ is None else environ
        policy = cls()
        policy.base = _positive("MUSE_RETRY_BASE", environ, policy.base)
        policy.cap = _positive("MUSE_RETRY_CAP", environ, policy.cap)
        policy.max_attempts = int(
            _positive("MUSE_RETRY_ATTEMPTS", environ, policy.max_attempts)
        )
        return policy

    def wait_seconds(self, state: RetryCallState) -> float:
        """Seconds to wait before the next attempt."""
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        return self._wait(state.attempt_number, error)

    def _wait(self, attempt_number: int, error: BaseException | None) -> float:
        """Seconds to wait after attempt `attempt_number` failed with `error`."""
        backoff = min(self.cap, self.base * 2 ** (attempt_number - 1))
        wait = random.uniform(0, backoff)
        if isinstance(error, RateLimited) and error.retry_after is not None:
            wait = max(wait, min(self.cap, error.retry_after))
        return wait

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        on_failure: Callable[[BaseException, int], None] | None = None,
    ) -> tuple[T, int]:
        """Run `attempt` until it succeeds or the policy gives up.

        Args:
            attempt: The request, as a no-argument coroutine function.
            on_failure: Called with each retried error and its attempt number.

        Returns:
            The result and the number of retries it took.
        """
        # Most requests succeed at once, and building a tenacity controller costs
        # more than a request to a local server takes, so the first attempt runs
        # without one; tenacity takes over from the second.
        try:
            return await attempt(), 0
        except (RateLimited, Transient) as error:
            if self.max_attempts <= 1:
                raise
            if on_failure is not None:
                on_failure(error, 1)
            await anyio.sleep(self._wait(1, error))

        def wait(state: RetryCallState) -> float:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            return self._wait(state.attempt_number + 1, error)

        def before_sleep(state: RetryCallState) -> None:
            if on_failure is not None and state.outcome is not None:
                error = state.outcome.exception()
                if error is not None:
                    on_failure(error, state.attempt_number + 1)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type((RateLimited, Transient)),
            stop=stop_after_attempt(self.max_attempts - 1),
            wait=wait,
            before_sleep=before_sleep,
            sleep=anyio.sleep,
            reraise=True,
        )
        retries = 0
        async for trial in retrying:
            with trial:
                retries = trial.retry_state.attempt_number
                result = await attempt()
        return result, retries


def _positive(name: str, environ: Mapping[str, str], default: float) -> float:
    text = environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"{name} must be a positive number, not '{text}'.")
    return value
