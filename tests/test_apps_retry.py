"""Retry schedule and loop against tenacity's; the circuit breaker's state machine; the balancer."""

import asyncio
import random

import pytest
import tenacity
from tenacity import retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random_exponential

from course_utils.apps.balancer import Balancer
from course_utils.apps.breaker import BreakerState, CircuitBreaker
from course_utils.apps.retry import Retryable, RetryPolicy, call_with_retries


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _state(attempt_number: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt_number
    return state


@pytest.mark.parametrize("base, cap", [(1.0, 30.0), (0.5, 3.0), (0.1, 0.25)])
def test_the_backoff_without_jitter_is_tenacitys_wait_exponential(base, cap):
    policy = RetryPolicy(max_attempts=12, base_s=base, max_delay_s=cap, jitter=False)
    tenacity_wait = wait_exponential(multiplier=base, max=cap)
    ours = [policy.backoff_s(retry, random.Random(0)) for retry in range(1, 12)]
    assert ours == pytest.approx([tenacity_wait(_state(n)) for n in range(1, 12)])


def test_full_jitter_draws_exactly_what_tenacitys_wait_random_exponential_draws():
    policy = RetryPolicy(max_attempts=10, base_s=0.5, max_delay_s=4.0, jitter=True)
    tenacity_wait = wait_random_exponential(multiplier=0.5, max=4.0)
    random.seed(1234)  # tenacity draws from the module's generator
    theirs = [tenacity_wait(_state(n)) for n in range(1, 10)]
    rng = random.Random(1234)
    assert [policy.backoff_s(n, rng) for n in range(1, 10)] == pytest.approx(theirs)
    for n, delay in enumerate(theirs, start=1):  # and each lies in [0, the capped exponential]
        assert 0 <= delay <= min(0.5 * 2 ** (n - 1), 4.0)


def test_the_retry_loop_sleeps_and_stops_as_tenacity_does():
    failures = 3

    def make_flaky():
        calls = {"n": 0}

        def flaky():
            calls["n"] += 1
            if calls["n"] <= failures:
                raise Retryable("try again")
            return calls["n"]
        return flaky, calls

    tenacity_sleeps: list[float] = []
    flaky, calls = make_flaky()
    tenacity.Retrying(stop=stop_after_attempt(4), wait=wait_exponential(multiplier=1, max=30),
                      retry=retry_if_exception_type(Retryable), sleep=tenacity_sleeps.append)(flaky)
    clock = FakeClock()
    our_sleeps: list[float] = []
    flaky2, calls2 = make_flaky()

    async def attempt():
        return flaky2()

    async def sleep(s):
        our_sleeps.append(s)
        await clock.sleep(s)

    policy = RetryPolicy(max_attempts=4, jitter=False, deadline_s=None)
    assert asyncio.run(call_with_retries(attempt, policy, sleep=sleep, clock=clock)) == 4
    assert our_sleeps == tenacity_sleeps == [1.0, 2.0, 4.0]  # the article's 1 s, 2 s, 4 s
    assert calls["n"] == calls2["n"] == 4


def test_retries_give_up_after_max_attempts_and_do_not_retry_other_errors():
    clock, calls = FakeClock(), {"n": 0}

    async def always_failing():
        calls["n"] += 1
        raise Retryable("down")

    with pytest.raises(Retryable):
        asyncio.run(call_with_retries(always_failing, RetryPolicy(max_attempts=3, jitter=False, deadline_s=None),
                                      sleep=clock.sleep, clock=clock))
    assert calls["n"] == 3 and clock.now == 1.0 + 2.0

    async def bad_request():
        calls["n"] += 1
        raise ValueError("not retryable")

    calls["n"] = 0
    with pytest.raises(ValueError):
        asyncio.run(call_with_retries(bad_request, RetryPolicy(), sleep=clock.sleep, clock=clock))
    assert calls["n"] == 1


def test_retry_after_is_a_floor_and_the_deadline_is_never_slept_past():
    policy = RetryPolicy(max_attempts=10, base_s=1.0, jitter=False, deadline_s=10.0)
    assert policy.delay_s(1, random.Random(0), retry_after_s=3.5) == 3.5  # the server asked for more
    assert policy.delay_s(3, random.Random(0), retry_after_s=0.2) == 4.0  # the backoff is longer
    clock, sleeps = FakeClock(), []

    async def rate_limited():
        raise Retryable("429", retry_after_s=3.0)

    async def sleep(s):
        sleeps.append(s)
        await clock.sleep(s)

    with pytest.raises(Retryable):
        asyncio.run(call_with_retries(rate_limited, policy, sleep=sleep, clock=clock))
    assert sleeps == [3.0, 3.0]  # max(1, 3), max(2, 3); the next max(4, 3) would end at 10 s: not made
    assert clock.now < policy.deadline_s


@pytest.mark.parametrize("bad", [{"max_attempts": 0}, {"base_s": -1}, {"exp_base": 0.5}, {"deadline_s": 0}])
def test_a_nonsense_policy_is_refused_in_one_line(bad):
    with pytest.raises(ValueError) as err:
        RetryPolicy(**bad)
    assert "\n" not in str(err.value)


def test_the_breaker_state_machine_under_a_scripted_sequence_of_events():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=10.0, clock=clock)
    trace = []
    script = ["fail", "fail", "ok", "fail", "fail", "fail",  # the success resets the count; 3 in a row open it
              "call", "wait 9.9", "call", "wait 0.1", "call", "call",  # open refuses; half-open lets one through
              "fail",  # the trial fails: open again, for a full timeout
              "wait 10", "call", "ok", "call"]  # the next trial succeeds: closed
    for event in script:
        if event == "fail":
            breaker.record_failure()
        elif event == "ok":
            breaker.record_success()
        elif event == "call":
            trace.append(breaker.allow())
        else:
            clock.now += float(event.split()[1])
        trace.append(breaker.state.value)
    assert trace == ["closed", "closed", "closed", "closed", "closed", "open",
                     False, "open", "open", False, "open", "half-open", True, "half-open", False, "half-open",
                     "open",
                     "half-open", True, "half-open", "closed", True, "closed"]
    assert [state for _, state in breaker.transitions] == [
        BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_least_outstanding_and_power_of_two_choices_spread_the_load():
    for strategy in ("least", "p2c"):
        balancer = Balancer(["a", "b", "c"], strategy, random.Random(0))
        held = []
        for _ in range(30):  # 30 requests that stay in flight: each goes to a least busy endpoint
            name = balancer.choose(["a", "b", "c"])
            context = balancer.in_flight(name)
            context.__enter__()
            held.append(context)
        counts = sorted(balancer.outstanding.values())
        assert counts[-1] - counts[0] <= (0 if strategy == "least" else 3), (strategy, counts)
        for context in held:
            context.__exit__(None, None, None)
        assert set(balancer.outstanding.values()) == {0}
    assert Balancer(["a", "b"], "first").choose(["b", "a"]) == "b"
    with pytest.raises(ValueError):
        Balancer(["a"], "round-robin-ish")
