"""Lab 08's reference solution agrees with course_utils.apps and with jsonschema on random inputs."""

import asyncio
import json
import random

import jsonschema
import pytest
from lab_solutions import solution_namespace

from course_utils.apps.breaker import CircuitBreaker
from course_utils.apps.retry import Retryable, RetryPolicy, call_with_retries


@pytest.fixture(scope="module")
def lab():
    return solution_namespace("08_application_patterns_lab.ipynb", {"json": json})


def test_the_lab_breaker_is_the_course_breaker_on_random_event_sequences(lab):
    rng = random.Random(0)
    for _ in range(300):
        threshold, timeout = rng.randint(1, 4), rng.choice([1.0, 2.5, 5.0])
        events = [rng.choice([["fail"], ["ok"], ["call"], ["wait", rng.choice([0.5, 1.0, 2.5, 5.0])]])
                  for _ in range(rng.randint(1, 40))]
        now = {"t": 0.0}
        breaker = CircuitBreaker(threshold, timeout, clock=lambda now=now: now["t"])
        expected = []
        for event in events:
            if event[0] == "wait":
                now["t"] += event[1]
            elif event[0] == "call":
                allowed = breaker.allow()
                expected.append([allowed, breaker.state.value])
                continue
            else:
                (breaker.record_success if event[0] == "ok" else breaker.record_failure)()
            expected.append(breaker.state.value)
        assert lab["breaker_trace"](events, threshold, timeout) == expected, (events, threshold, timeout)


class Draws(random.Random):
    """A generator whose random() returns given numbers: uniform(0, c) is then draw * c."""

    def __init__(self, draws):
        super().__init__(0)
        self.draws = list(draws)

    def random(self):
        return self.draws.pop(0)


def test_the_lab_retry_schedule_is_the_course_retry_loop(lab):
    rng = random.Random(1)
    for _ in range(300):
        failures = [rng.choice([None, None, 0.5, 2.0, 8.0]) for _ in range(rng.randint(0, 6))]
        max_attempts, base, cap = rng.randint(1, 6), rng.choice([0.25, 0.5, 1.0]), rng.choice([2.0, 4.0, 30.0])
        deadline = rng.choice([None, 3.0, 10.0])
        draws = [rng.random() for _ in range(6)]
        now, sleeps, remaining = {"t": 0.0}, [], list(failures)

        async def attempt(remaining=remaining):
            if remaining:
                raise Retryable("failed", retry_after_s=remaining.pop(0))
            return "ok"

        async def sleep(s, now=now, sleeps=sleeps):
            sleeps.append(s)
            now["t"] += s

        policy = RetryPolicy(max_attempts=max_attempts, base_s=base, max_delay_s=cap, jitter=True, deadline_s=deadline)
        try:
            succeeded = asyncio.run(call_with_retries(attempt, policy, Draws(draws), sleep=sleep,
                                                      clock=lambda now=now: now["t"])) == "ok"
        except Retryable:
            succeeded = False
        got = lab["retry_sleeps"](failures, max_attempts, base, cap, deadline, draws)
        assert got[1] == succeeded and got[0] == pytest.approx(sleeps), (failures, max_attempts, deadline)


SCHEMAS = [
    {"type": "object", "properties": {"value": {"type": "number"}, "unit": {"type": "string", "enum": ["km", "mi"]},
                                      "digits": {"type": "integer"}},
     "required": ["value", "unit"], "additionalProperties": False},
    {"type": "object", "properties": {"city": {"type": "string"}, "exact": {"type": "boolean"}}, "required": ["city"]},
]
VALUES = [1, 2.0, 2.5, True, False, None, "km", "mi", "Oslo", "3", [1], {"a": 1}]


def _jsonschema_fields(arguments: str, schema: dict) -> list[str]:
    try:
        args = json.loads(arguments)
    except ValueError:
        return ["<json>"]
    if not isinstance(args, dict):
        return ["<json>"]
    fields = set()
    for error in jsonschema.Draft202012Validator(schema).iter_errors(args):
        if error.validator == "required":
            fields |= {name for name in schema["required"] if name not in args}
        elif error.validator == "additionalProperties":
            fields |= set(args) - set(schema["properties"])
        else:
            fields.add(error.path[0])
    return sorted(fields)


def test_the_lab_validator_names_the_fields_jsonschema_rejects(lab):
    rng = random.Random(2)
    for _ in range(500):
        schema = rng.choice(SCHEMAS)
        names = list(schema["properties"]) + ["extra"]
        args = {name: rng.choice(VALUES) for name in rng.sample(names, rng.randint(0, len(names)))}
        text = rng.choice([json.dumps(args)] * 8 + [json.dumps(args)[:-1], "[1, 2]", "null", '"text"'])
        assert lab["tool_call_problems"](text, schema) == _jsonschema_fields(text, schema), (text, schema)
