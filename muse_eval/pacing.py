"""Requests and tokens per minute: the pace a hosted API's quota allows.

`AdaptiveLimit` (in ``retry.py``) bounds how many requests are in flight; a `Pacer`
bounds how fast they start. It holds up to two token buckets, one counting requests
(``--rpm``) and one counting tokens (``--tpm``). A bucket refills continuously at its
per-minute rate and holds at most one second's worth, because providers enforce
their minute quotas over shorter windows and a full minute's burst at start-up
would be throttled at once.

The tokens of a request are not known until it is answered, so a request takes an
estimate (its prompt at about three characters per token, plus ``max_tokens`` for
every reply it asks for) and the difference is settled from the usage the backend
reports. A request larger than a bucket's capacity waits for a full bucket and then
leaves it in debt, so that the average rate still holds.

A 429 with ``Retry-After`` pauses every new request, not only the throttled one:
the quota is shared by all of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

__all__ = ["Pacer", "TokenBucket", "estimate_tokens"]

logger = logging.getLogger(__name__)

#: Characters per token assumed for an estimate; low, so that estimates run high.
CHARS_PER_TOKEN = 3.0
#: Tokens the chat template adds per message, roughly.
TOKENS_PER_MESSAGE = 4


def estimate_tokens(prompt_chars: int, messages: int, completion_tokens: int) -> int:
    """A generous guess at the tokens one request uses, before it is sent.

    Args:
        prompt_chars: Characters in all messages of the request.
        messages: Number of messages.
        completion_tokens: The most tokens the replies may take (``max_tokens * n``).
    """
    prompt = int(prompt_chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * messages
    return prompt + completion_tokens


class TokenBucket:
    """A continuously refilled bucket of units (requests or tokens).

    Args:
        per_minute: Units added per minute.
        burst_seconds: Seconds of refill the bucket holds at most.
        clock: Monotonic clock in seconds (replaced in tests).
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("a bucket needs a positive rate")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self._clock = clock
        self._level = self.capacity
        self._updated = clock()
        # FIFO: whoever waits first is served first, so no request starves.
        self._lock = anyio.Lock()

    @property
    def level(self) -> float:
        """Units available now; negative while in debt."""
        self._refill()
        return self._level

    async def take(self, amount: float) -> None:
        """Wait until `amount` units are available and take them."""
        async with self._lock:
            need = min(amount, self.capacity)
            while True:
                self._refill()
                if self._level >= need:
                    self._level -= amount
                    return
                await anyio.sleep((need - self._level) / self.rate)

    def settle(self, taken: float, used: float) -> None:
        """Correct an estimate: `taken` units were taken, `used` were used."""
        self._refill()
        self._level = min(self.capacity, self._level + taken - used)

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(
            self.capacity, self._level + (now - self._updated) * self.rate
        )
        self._updated = now


class Pacer:
    """Starts requests no faster than ``--rpm`` and ``--tpm`` allow.

    Args:
        rpm: Requests per minute at most; None for no limit.
        tpm: Tokens per minute at most; None for no limit.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None
        self._paused_until = 0.0

    async def wait_turn(self, estimated_tokens: int) -> None:
        """Wait until a request of about `estimated_tokens` tokens may start."""
        while True:
            delay = self._paused_until - time.monotonic()
            if delay <= 0:
                break
            await anyio.sleep(delay)
        if self.requests is not None:
            await self.requests.take(1)
        if self.tokens is not None:
            await self.tokens.take(estimated_tokens)

    def settle(self, estimated_tokens: int, used_tokens: int | None) -> None:
        """Replace a request's estimate by the tokens the backend reported."""
        if self.tokens is not None and used_tokens is not None:
            self.tokens.settle(estimated_tokens, used_tokens)

    def pause(self, seconds: float) -> None:
        """Start no request for `seconds` (a server's Retry-After)."""
        until = time.monotonic() + seconds
        if until > self._paused_until:
            self._paused_until = until
            logger.debug("Pausing new requests for %.2f s (Retry-After)", seconds)
