"""Spread requests over several endpoints by what each has in flight.

``least``: the endpoint with the fewest outstanding requests (ties broken at random).
``p2c`` (power of two choices): draw two endpoints at random, take the less busy one; nearly as
even as ``least`` while needing no global view, which is why large balancers use it.
``first``: always the first allowed endpoint (a primary with standbys).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

__all__ = ["STRATEGIES", "Balancer"]

STRATEGIES = ("least", "p2c", "first")


class Balancer:
    def __init__(self, names: Sequence[str], strategy: str = "p2c", rng: random.Random | None = None):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown balancing strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        if not names or len(set(names)) != len(names):
            raise ValueError(f"need one or more distinct endpoint names, got {list(names)}")
        self.strategy, self.rng = strategy, rng or random.Random(0)
        self.outstanding = dict.fromkeys(names, 0)

    def choose(self, candidates: Sequence[str]) -> str:
        """One of ``candidates`` (the endpoints allowed now), by the strategy."""
        if not candidates:
            raise ValueError("no endpoint to choose from")
        if self.strategy == "first" or len(candidates) == 1:
            return candidates[0]
        if self.strategy == "p2c":
            candidates = self.rng.sample(list(candidates), 2)
        fewest = min(self.outstanding[name] for name in candidates)
        return self.rng.choice([name for name in candidates if self.outstanding[name] == fewest])

    @contextmanager
    def in_flight(self, name: str) -> Iterator[None]:
        """Count a request to ``name`` as outstanding while the block runs."""
        self.outstanding[name] += 1
        try:
            yield
        finally:
            self.outstanding[name] -= 1
