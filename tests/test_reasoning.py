"""The five reasoning methods: their prompts, the batch run on a scripted model, and the comparison."""

import pytest

from course_utils.chat import Completion
from course_utils.icl import reasoning
from course_utils.icl.reasoning import METHODS, ReasoningRun, compare_with_direct, reasoning_prompt, run_reasoning


def test_each_method_asks_its_own_way():
    q = "Tom has 3 apples and buys 4. How many?"
    assert reasoning_prompt("direct", q)[0]["content"] == "Reply with the final number only."
    assert reasoning_prompt("zero-shot CoT", q).endswith("Let's think step by step.")
    manual = reasoning_prompt("manual CoT", q)
    assert [m["role"] for m in manual] == ["user", "assistant"] * 2 + ["user"] and manual[-1]["content"] == q
    assert "```python" in reasoning_prompt("program-of-thought", q)
    with pytest.raises(ValueError, match="unknown method"):
        reasoning_prompt("tree of thought", q)


def _scripted(monkeypatch, replies):
    """generate_batch replaced by a function that answers each prompt from ``replies(prompt, sample)``."""

    def fake(model, tokenizer, prompts, *, n=1, max_new_tokens=64, temperature=0.0, seed=None, **_):
        return [[Completion(replies(p, k), [], "stop") for k in range(n)] for p in prompts]

    monkeypatch.setattr(reasoning, "generate_batch", fake)


def test_answers_are_read_per_method_and_votes_are_counted(monkeypatch):
    problems = [{"question": "one", "answer": 7}, {"question": "two", "answer": 12}]

    def replies(prompt, sample):
        text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        if "python" in text:
            return "```python\nprint(3 + 4)\n```" if text.startswith("one") else "no code"
        if "step by step" in text:
            return ["so 7", "so 7", "so 9"][sample] if text.startswith("one") else ["12", "11", "11"][sample]
        return "7" if text == "one" else "The answer is 13."

    _scripted(monkeypatch, replies)
    run = run_reasoning(None, None, problems, max_new_tokens=8, votes=3)
    assert run.answers["direct"] == [7, 13] and run.answers["manual CoT"] == [7, 13]
    assert run.answers["zero-shot CoT"] == [7, 12]  # greedy: the first sample's text
    assert run.answers["program-of-thought"] == [7, None]  # the sandbox printed 7; no code block, no answer
    assert run.answers["self-consistency"] == [7, 11]  # majority of the three samples
    assert run.right("zero-shot CoT") == [True, True] and run.right("direct") == [True, False]
    with pytest.raises(ValueError, match="at least one problem"):
        run_reasoning(None, None, [], 8, 3)


def test_the_comparison_can_come_out_either_way():
    truth = [1] * 12
    run = ReasoningRun(truth, {"direct": [0] * 12, "zero-shot CoT": [1] * 12, "manual CoT": [0] * 12,
                               "program-of-thought": [0] * 11 + [1], "self-consistency": [0] * 12}, {})
    rows = {r["method"]: r for r in compare_with_direct(run)}
    assert set(rows) == set(METHODS[1:])
    assert rows["zero-shot CoT"]["verdict"] == "a tested gain" and rows["zero-shot CoT"]["right only with it"] == 12
    assert rows["program-of-thought"]["verdict"] == "no difference detected"
    worse = ReasoningRun(truth, {m: ([1] * 12 if m == "direct" else [0] * 12) for m in METHODS}, {})
    assert all(r["verdict"] == "a tested loss" for r in compare_with_direct(worse))
