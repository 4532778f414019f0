"""A circuit breaker: stop calling a provider that keeps failing, and try it again later.

Three states. *Closed*: calls go through; ``failure_threshold`` consecutive failures open it.
*Open*: no call goes through (the caller falls back at once instead of waiting on a dead
provider) until ``reset_timeout_s`` has passed. *Half-open*: up to ``half_open_calls`` trial calls
go through; a success closes the breaker, a failure opens it again for another full timeout.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """The state machine of one provider; ``clock`` is injectable so tests drive time."""

    def __init__(self, failure_threshold: int = 5, reset_timeout_s: float = 5.0, half_open_calls: int = 1,
                 clock: Callable[[], float] = time.monotonic):
        if failure_threshold < 1 or half_open_calls < 1 or reset_timeout_s <= 0:
            raise ValueError("failure_threshold and half_open_calls must be >= 1 and reset_timeout_s > 0")
        self.failure_threshold, self.reset_timeout_s = failure_threshold, reset_timeout_s
        self.half_open_calls, self.clock = half_open_calls, clock
        self._state = BreakerState.CLOSED
        self.failures = 0  # consecutive, while closed
        self.opened_at = 0.0
        self.trials = 0  # calls let through while half-open and not yet answered
        self.transitions: list[tuple[float, BreakerState]] = []

    @property
    def state(self) -> BreakerState:
        """The state now: an open breaker whose timeout has passed reads as half-open."""
        if self._state is BreakerState.OPEN and self.clock() - self.opened_at >= self.reset_timeout_s:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """May a call go through now? (Counts it as a trial when half-open.)"""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self.trials < self.half_open_calls:
            self.trials += 1
            return True
        return False

    def record_success(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._move(BreakerState.CLOSED)
        self.failures = 0

    def record_failure(self) -> None:
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._open()
        elif state is BreakerState.CLOSED:
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self._open()

    def _open(self) -> None:
        self.opened_at = self.clock()
        self._move(BreakerState.OPEN)

    def _move(self, state: BreakerState) -> None:
        self._state, self.trials, self.failures = state, 0, 0
        self.transitions.append((self.clock(), state))
