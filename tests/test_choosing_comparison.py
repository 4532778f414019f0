import asyncio
import json

import httpx
import pytest

from course_utils.choosing.comparison import (
    CATEGORIES,
    Contender,
    Task,
    TaskResult,
    break_even_value,
    compare,
    formula_equal,
    load_tasks,
    run_contender,
    score_reply,
)
from course_utils.tokens import find_price

TASKS = {t.id: t for t in load_tasks()}


def test_the_ten_tasks_follow_the_articles_split():
    counts = {c: sum(t.category == c for t in TASKS.values()) for c in CATEGORIES}
    assert counts == {"factual lookup": 2, "multi-step reasoning": 3, "code": 2, "creative writing": 1,
                      "domain knowledge": 2}


@pytest.mark.parametrize("task, right, wrong", [
    ("capital", "Canberra.", "Sydney"),
    ("moon-landing", "It was 1969.", "1968"),
    ("pens", "4 packs of 3, so 4 x 2 = 8.\nAnswer: 8", "Answer: 6"),
    ("ages", "2A + 16 = 40, so A = 12.\nAnswer: 12", "Answer: 16"),
    ("train", "09:40 + 2:35 = 12:15\nAnswer: 12:15", "Answer: 11:75"),
    ("palindrome", "```python\ndef is_palindrome(s):\n    t = s.replace(' ', '').lower()\n    return t == t[::-1]\n```",
     "```python\ndef is_palindrome(s):\n    return s == s[::-1]\n```"),
    ("second-largest", "```python\ndef second_largest(xs):\n    v = sorted(set(xs))\n    return v[-2] if len(v) > 1 "
     "else None\n```", "```python\ndef second_largest(xs):\n    return sorted(xs)[-2]\n```"),
    ("lora-params", "Answer: r(d + k)", "Answer: d*k*r"),
])
def test_automatic_scorers_tell_right_from_wrong(task, right, wrong):
    assert score_reply(TASKS[task], right)[0] == 1.0
    assert score_reply(TASKS[task], wrong)[0] == 0.0


def test_code_that_misbehaves_scores_zero_without_harm():
    task = TASKS["palindrome"]
    assert score_reply(task, "I would write a loop.")[0] == 0.0  # no code block
    hang = "```python\ndef is_palindrome(s):\n    while True:\n        pass\n```"
    score, detail = score_reply(task, hang, timeout_s=1.0)
    assert score == 0.0 and "failed" in detail


@pytest.mark.parametrize("written", ["r(d+k)", "dr + kr", "r × (d + k)", "r*d + r*k", "(k + d) r", "`rd+rk`."])
def test_formulas_are_compared_by_value_not_by_spelling(written):
    assert formula_equal(f"Each of B and A is trainable.\nAnswer: {written}", "r*(d+k)", ["d", "k", "r"])


@pytest.mark.parametrize("written", ["d*k", "r(d+k)+1", "__import__('os')", "r**(d+k)", ""])
def test_wrong_or_hostile_formulas_are_rejected(written):
    assert not formula_equal(f"Answer: {written}", "r*(d+k)", ["d", "k", "r"])


def test_rubric_scores_the_share_of_checks_met():
    haiku = TASKS["haiku"]
    assert score_reply(haiku, "Fans hum in the dark\nthe server counts every hour\nnever once asleep")[0] == 1.0
    score, detail = score_reply(haiku, "Sure! Here is a haiku:\nThe server hums\nall night long\nit never rests")
    assert score == 0.5 and "exactly three non-empty lines" in detail and "no preamble" in detail


def test_bad_task_files_are_explained(tmp_path):
    bad = tmp_path / "tasks.jsonl"
    bad.write_text(json.dumps({"id": "x", "category": "poetry", "prompt": "p", "scoring": {"kind": "contains"}}))
    with pytest.raises(ValueError, match="line 1: category must be one of"):
        load_tasks(bad)
    bad.write_text(json.dumps({"id": "x", "category": "code", "prompt": "p", "scoring": {"kind": "python"}}))
    with pytest.raises(ValueError, match="needs 'tests'"):
        load_tasks(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="line 1: expected JSON"):
        load_tasks(bad)


def _result(task, category, score, cost):
    return TaskResult(task, category, "", score, "", 10, 5, cost, 0.1)


def test_compare_and_the_break_even_value_of_a_right_answer():
    a = [_result("t1", "code", 0.0, 0.001), _result("t2", "code", 1.0, 0.001), _result("t3", "creative writing", 0.5,
                                                                                      0.001)]
    b = [_result("t1", "code", 1.0, 0.011), _result("t2", "code", 1.0, 0.011), _result("t3", "creative writing", 1.0,
                                                                                      0.011)]
    result = compare(a, b)
    assert result["categories"]["code"] == {"n": 2, "a": 0.5, "b": 1.0}
    assert (result["a_better"], result["b_better"]) == (0, 2) and result["sign_test_p"] == pytest.approx(0.5)
    assert break_even_value(result) == pytest.approx(0.010 / 0.5)  # $0.01 more per task buys half a right answer
    assert break_even_value(compare(b, a)) is None  # the dearer contender is not better: nothing makes it pay
    with pytest.raises(ValueError, match="same tasks"):
        compare(a, b[:2])


def test_run_contender_sends_the_system_prompt_and_bills_the_reported_tokens():
    seen = []

    def reply(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        answer = "Canberra" if "Australia" in body["messages"][-1]["content"] else "Answer: 8"
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})

    mini = find_price("gpt-4o-mini")
    contender = Contender("mini, step by step", "http://test/v1", "gpt-4o-mini", mini, system="Think step by step.",
                          seed=7)
    tasks = [TASKS["capital"], TASKS["pens"], TASKS["ages"]]

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as http:
            return await run_contender(contender, tasks, http_client=http)

    results = asyncio.run(go())
    assert [r.score for r in results] == [1.0, 1.0, 0.0]
    assert all(body["messages"][0] == {"role": "system", "content": "Think step by step."} for body in seen)
    assert all(body["seed"] == 7 and body["temperature"] == 0.1 for body in seen)
    assert results[0].cost_usd == pytest.approx(mini.cost(100, 20))


def test_a_task_is_a_plain_record():
    task = Task("t", "code", "p", {"kind": "python", "tests": "assert True"})
    assert score_reply(task, "```python\nx = 1\n```")[0] == 1.0
