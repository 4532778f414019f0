"""Retries with exponential backoff, jitter, Retry-After and a total deadline.

The schedule is the one tenacity computes (``wait_exponential`` without jitter,
``wait_random_exponential`` with *full* jitter: a uniform draw between 0 and the exponential
delay), written out here because the course teaches it; tests/test_apps_retry.py checks both the
delays and the attempt counts against tenacity. Two rules tenacity leaves to its user are built in:
a server's ``Retry-After`` is a floor on the next delay, and no sleep may end past the deadline
(a retry that could only start after it is not made).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["RetryPolicy", "Retryable", "call_with_retries"]

T = TypeVar("T")


class Retryable(Exception):
    """A failure worth another attempt (429, 5xx, a reset, a timeout, a broken body).

    ``retry_after_s``: the server's own wait, when it sent one.
    """

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    The defaults are the article's: 3 retries after 1 s, 2 s and 4 s (``jitter=False``); with
    ``jitter=True`` each delay is drawn uniformly from [0, that delay], which spreads the retries
    of many clients that failed together instead of sending them back in one wave.
    """

    max_attempts: int = 4  # the first try and 3 retries
    base_s: float = 1.0
    exp_base: float = 2.0
    max_delay_s: float = 30.0
    jitter: bool = True
    deadline_s: float | None = 30.0  # total time budget of one call, retries and sleeps included

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts counts the first try too, so it is at least 1, got {self.max_attempts}")
        if self.base_s < 0 or self.max_delay_s < 0 or self.exp_base < 1:
            raise ValueError("base_s and max_delay_s must be >= 0 and exp_base >= 1")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError(f"deadline_s must be positive (or None for no deadline), got {self.deadline_s}")

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number ``retry`` (1 for the first retry), before Retry-After."""
        if retry < 1:
            raise ValueError(f"retry counts from 1, got {retry}")
        ceiling = min(self.base_s * self.exp_base ** (retry - 1), self.max_delay_s)
        return rng.uniform(0, ceiling) if self.jitter else ceiling

    def delay_s(self, retry: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        """The wait before retry ``retry``: the backoff, but never less than the server asked for."""
        backoff = self.backoff_s(retry, rng)
        return backoff if retry_after_s is None else max(backoff, retry_after_s)


async def call_with_retries(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy,
                            rng: random.Random | None = None,
                            sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                            clock: Callable[[], float] = time.monotonic,
                            on_retry: Callable[[int, Retryable, float], None] | None = None) -> T:
    """Await ``attempt()`` until it returns, retrying on :class:`Retryable` as ``policy`` says.

    Raises the last :class:`Retryable` when the attempts run out or the next wait would end past
    the deadline; any other exception is not retried. ``on_retry(retry, error, delay_s)`` is told
    about each retry before its sleep (a trace span, a counter).
    """
    rng = rng or random.Random()
    started = clock()
    for number in range(1, policy.max_attempts + 1):
        try:
            return await attempt()
        except Retryable as error:
            if number == policy.max_attempts:
                raise
            delay = policy.delay_s(number, rng, error.retry_after_s)
            if policy.deadline_s is not None and clock() - started + delay >= policy.deadline_s:
                raise
            if on_retry is not None:
                on_retry(number, error, delay)
            await sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
