"""A fault drill: one scripted fault schedule, replayed against each client strategy.

:func:`run_drill` sends questions at a fixed rate (open loop: request i leaves at i / rate_per_s
whether or not earlier ones came back, as users do), awaits every answer and summarises: the share
answered at each degradation level (with n and a 95% interval), p50/p95 latency, and provider
calls per question, counted at the fault proxies so that clients which retry on their own (the
openai client's ``max_retries``) are counted the same way as ours.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from course_utils.apps.fallback import Answer, Level
from course_utils.apps.faults import FaultProxy
from course_utils.stats import rate

__all__ = ["DrillResult", "run_drill"]


@dataclass
class DrillResult:
    strategy: str
    levels: list[Level]  # one per question, in sending order
    latencies_s: list[float]
    provider_calls: int  # requests that reached the fault proxies
    faults: dict[str, int]  # what the proxies did with them ("none": forwarded)

    @property
    def n(self) -> int:
        return len(self.levels)

    def answered(self, worst: Level = Level.STATIC):
        """The share answered at ``worst`` or better (escalations are not answers), as a Rate."""
        return rate(sum(level <= worst for level in self.levels), self.n)

    def summary(self) -> dict[str, object]:
        counts = Counter(level.name.lower() for level in self.levels)
        return {
            "strategy": self.strategy, "n": self.n,
            "answered": self.answered().as_dict(),
            "answered_live": self.answered(Level.LIVE).as_dict(),
            "levels": {level.name.lower(): counts.get(level.name.lower(), 0) for level in Level},
            "latency_p50_s": round(float(np.percentile(self.latencies_s, 50)), 3),
            "latency_p95_s": round(float(np.percentile(self.latencies_s, 95)), 3),
            "calls_per_question": round(self.provider_calls / self.n, 3),
            "faults": self.faults,
        }


async def run_drill(strategy: str, ask: Callable[[str], Awaitable[Answer]], questions: Sequence[str],
                    rate_per_s: float, proxies: Sequence[FaultProxy]) -> DrillResult:
    """Send ``questions`` to ``ask`` at ``rate_per_s``; the proxies' clocks restart at the first send."""
    if rate_per_s <= 0 or not questions:
        raise ValueError("need a positive rate and at least one question")
    for proxy in proxies:
        proxy.restart_clock()
    start = time.monotonic()

    async def one(i: int, question: str) -> tuple[Level, float]:
        await asyncio.sleep(max(0.0, start + i / rate_per_s - time.monotonic()))
        sent = time.monotonic()
        answer = await ask(question)
        return answer.level, time.monotonic() - sent

    outcomes = await asyncio.gather(*(one(i, q) for i, q in enumerate(questions)))
    faults: Counter = Counter()
    for proxy in proxies:
        faults.update(str(fault).lower() if fault else "none" for fault in proxy.counts().elements())
    return DrillResult(strategy, [level for level, _ in outcomes], [latency for _, latency in outcomes],
                       sum(len(proxy.log) for proxy in proxies), dict(sorted(faults.items())))
