"""The article's exercise 3 as a reusable harness: ten tasks, two contenders, scores, costs, and the
quality gap at which the dearer one pays.

A contender is an OpenAI-compatible endpoint, a model name and an optional system prompt, so the
same code compares gpt-4o-mini with gpt-4o (with an API key), two Hub models behind vLLM on a GPU,
or, offline, the course's own model with and without a chain-of-thought instruction.

Tasks (``data/comparison_tasks.jsonl``, see its datasheet) are scored automatically:

* ``contains``: the reply holds one of the accepted strings (case-insensitive);
* ``number``: the reply's final number (chapter 3's ``extract_number``) equals the answer;
* ``python``: the reply's code block, followed by the task's asserts, runs in the sandbox;
* ``formula``: the expression after the last ``Answer:`` equals the reference at random values of
  its variables (evaluated by chapter 8's safe arithmetic evaluator, never ``eval``);
* ``rubric``: the share of checkable criteria the reply meets (line, word and sentence counts,
  words it must or must not use), for tasks without one right answer.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy.stats import binomtest

from course_utils.apps.toolbox import safe_eval
from course_utils.icl.prompting import extract_code, extract_number
from course_utils.stats import rate
from course_utils.tokens import Price

__all__ = ["CATEGORIES", "TASKS_FILE", "Contender", "Task", "TaskResult", "break_even_value", "compare",
           "formula_equal", "load_tasks", "run_contender", "score_reply"]

TASKS_FILE = Path(__file__).resolve().parent.parent / "data" / "comparison_tasks.jsonl"
CATEGORIES = ("factual lookup", "multi-step reasoning", "code", "creative writing", "domain knowledge")
KINDS = ("contains", "number", "python", "formula", "rubric")
RUBRIC_CHECKS = ("lines", "max_words", "max_sentences", "any", "all", "none")


@dataclass(frozen=True)
class Task:
    """One task: an id, one of :data:`CATEGORIES`, the prompt, and how a reply is scored."""

    id: str
    category: str
    prompt: str
    scoring: dict[str, Any]


def _check_task(task: Task, where: str) -> None:
    if task.category not in CATEGORIES:
        raise ValueError(f"{where}: category must be one of {', '.join(CATEGORIES)}, got {task.category!r}")
    kind = task.scoring.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}: scoring kind must be one of {', '.join(KINDS)}, got {kind!r}")
    needed = {"contains": "any", "number": "answer", "python": "tests", "formula": "answer", "rubric": "checks"}[kind]
    if needed not in task.scoring:
        raise ValueError(f"{where}: a {kind!r} task needs {needed!r} in its scoring")
    for check in task.scoring.get("checks", []):
        if check.get("check") not in RUBRIC_CHECKS or "value" not in check:
            raise ValueError(f"{where}: each rubric check needs a 'check' in {', '.join(RUBRIC_CHECKS)} and a 'value'")


def load_tasks(path: str | Path = TASKS_FILE) -> list[Task]:
    """The comparison tasks, validated (see the data README)."""
    tasks = []
    for line, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
            task = Task(row["id"], row["category"], row["prompt"], row["scoring"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{Path(path).name} line {line}: expected JSON with id, category, prompt and scoring "
                             f"({err})") from None
        _check_task(task, f"{Path(path).name} line {line}")
        tasks.append(task)
    if len({t.id for t in tasks}) != len(tasks):
        raise ValueError(f"{path}: task ids must be unique")
    return tasks


_IMPLICIT = re.compile(r"(?<=[0-9a-z)])(?=[a-z(])|(?<=[a-z)])(?=[0-9])")


def _formula(text: str, variables: list[str]) -> str | None:
    """A reply's formula as Python arithmetic with explicit ``*``, or None if it is not one."""
    lines = re.split(r"(?i)answer\s*:", text)[-1].strip().splitlines()
    text = lines[0].strip() if lines else ""
    text = text.strip("`$. ").lower().replace("×", "*").replace("·", "*").replace("^", "**")
    text = re.sub(r"(?<=[0-9a-z)])\s*x\s*(?=[0-9a-z(])", "*", text) if "x" not in variables else text
    text = text.replace(" ", "")
    if not text or re.search(rf"[^0-9{''.join(variables)}+\-*/().]", text):
        return None
    return _IMPLICIT.sub("*", text)


def formula_equal(reply: str, reference: str, variables: list[str], trials: int = 5, seed: int = 0) -> bool:
    """Whether the formula a reply ends with equals ``reference`` at ``trials`` random points.

    Accepts the ways people write products: ``r(d+k)``, ``dr + kr``, ``r × (d + k)``, ``r*d + r*k``.
    """
    formula = _formula(reply, variables)
    if formula is None:
        return False
    rng = random.Random(seed)
    for _ in range(trials):
        point = {v: rng.randint(2, 97) for v in variables}
        try:
            got, expected = _value_at(formula, point), _value_at(reference, point)
        except ValueError:
            return False
        if abs(got - expected) > 1e-9 * max(1.0, abs(expected)):
            return False
    return True


def _value_at(expression: str, point: dict[str, int]) -> float:
    """The arithmetic ``expression`` with each variable replaced by its value at ``point``."""
    return safe_eval(re.sub("|".join(point), lambda m: str(point[m.group()]), expression))


def _meets(kind: str, value: Any, reply: str) -> bool:
    """Whether ``reply`` meets one rubric check."""
    low = reply.lower()
    if kind == "lines":
        return len([line for line in reply.strip().splitlines() if line.strip()]) == value
    if kind == "max_words":
        return len(re.findall(r"[A-Za-z0-9']+", reply)) <= value
    if kind == "max_sentences":
        return len([s for s in re.split(r"(?<=[.!?])\s+", reply.strip()) if s.strip()]) <= value
    found = [w.lower() in low for w in value]
    return {"any": any(found), "all": all(found), "none": not any(found)}[kind]


def _rubric(reply: str, checks: list[dict[str, Any]]) -> tuple[float, str]:
    failed = [check.get("says", check["check"]) for check in checks
              if not _meets(check["check"], check["value"], reply)]
    return 1 - len(failed) / len(checks), ("missed: " + "; ".join(failed)) if failed else "all checks met"


def score_reply(task: Task, reply: str, timeout_s: float = 5.0) -> tuple[float, str]:
    """(score in [0, 1], what decided it) for one reply to ``task``."""
    scoring, kind = task.scoring, task.scoring["kind"]
    if kind == "contains":
        found = [a for a in scoring["any"] if a.lower() in reply.lower()]
        return float(bool(found)), f"found {found[0]!r}" if found else "no accepted answer in the reply"
    if kind == "number":
        value = extract_number(reply)
        return float(value == scoring["answer"]), f"final number {value} (expected {scoring['answer']})"
    if kind == "formula":
        ok = formula_equal(reply, scoring["answer"], scoring.get("variables", []))
        return float(ok), f"formula {'equals' if ok else 'does not equal'} {scoring['answer']}"
    if kind == "python":
        from course_utils.sandbox import run_python

        code = extract_code(reply)
        if code is None:
            return 0.0, "no ```python block in the reply"
        run = run_python(f"{code}\n\n{scoring['tests']}\n", timeout_s)
        return float(run.ok), "all asserts pass" if run.ok else f"failed: {(run.error or '')[:80]}"
    return _rubric(reply, scoring["checks"])


@dataclass(frozen=True)
class Contender:
    """Who answers: an OpenAI-compatible endpoint (``base_url`` ends in /v1), a model, an optional system
    prompt, and the price table row its tokens are billed at (``price``). ``seed`` is passed on to the
    server (the course's and vLLM's honour it, so a sampled run repeats; APIs treat it as best effort)."""

    name: str
    base_url: str
    model: str
    price: Price
    system: str | None = None
    api_key: str = "not-needed"
    temperature: float = 0.1
    max_tokens: int = 256
    seed: int | None = None


@dataclass(frozen=True)
class TaskResult:
    """One contender's reply to one task, scored and counted."""

    task: str
    category: str
    reply: str
    score: float
    detail: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    seconds: float


async def run_contender(contender: Contender, tasks: list[Task], concurrency: int = 4, timeout_s: float = 600.0,
                        http_client: Any = None) -> list[TaskResult]:
    """Send every task to the contender (``concurrency`` at a time) and score the replies, in task order.

    ``http_client`` (an ``httpx.AsyncClient``) is passed to the official ``openai`` client, e.g. to
    go through a proxy or, in tests, a mock transport.
    """
    import openai

    client = openai.AsyncOpenAI(base_url=contender.base_url, api_key=contender.api_key, timeout=timeout_s,
                                max_retries=2, http_client=http_client)
    gate = asyncio.Semaphore(concurrency)

    async def one(task: Task) -> TaskResult:
        messages = ([{"role": "system", "content": contender.system}] if contender.system else []) + [
            {"role": "user", "content": task.prompt}]
        async with gate:
            start = time.perf_counter()
            reply = await client.chat.completions.create(model=contender.model, messages=messages,
                                                         temperature=contender.temperature,
                                                         max_tokens=contender.max_tokens, seed=contender.seed)
            seconds = time.perf_counter() - start
        text = reply.choices[0].message.content or ""
        used = reply.usage
        score, detail = await asyncio.to_thread(score_reply, task, text)
        return TaskResult(task.id, task.category, text, score, detail, used.prompt_tokens, used.completion_tokens,
                          contender.price.cost(used.prompt_tokens, used.completion_tokens), seconds)

    try:
        return list(await asyncio.gather(*(one(task) for task in tasks)))
    finally:
        await client.close()


def compare(a: list[TaskResult], b: list[TaskResult]) -> dict[str, Any]:
    """Two contenders' results on the same tasks: mean score per category and overall, cost per task,
    and a sign test on the tasks where one scored higher (exact binomial, two-sided)."""
    if [r.task for r in a] != [r.task for r in b]:
        raise ValueError("compare needs both contenders' results on the same tasks, in the same order")
    categories = {}
    for category in dict.fromkeys(r.category for r in a):
        pair = [(x.score, y.score) for x, y in zip(a, b, strict=True) if x.category == category]
        categories[category] = {"n": len(pair), "a": sum(x for x, _ in pair) / len(pair),
                                "b": sum(y for _, y in pair) / len(pair)}
    a_better = sum(x.score > y.score for x, y in zip(a, b, strict=True))
    b_better = sum(y.score > x.score for x, y in zip(a, b, strict=True))
    n = len(a)
    return {"n": n, "categories": categories,
            "mean_a": sum(r.score for r in a) / n, "mean_b": sum(r.score for r in b) / n,
            "full_marks_a": rate(sum(r.score == 1 for r in a), n),
            "full_marks_b": rate(sum(r.score == 1 for r in b), n),
            "cost_per_task_a": sum(r.cost_usd for r in a) / n, "cost_per_task_b": sum(r.cost_usd for r in b) / n,
            "a_better": a_better, "b_better": b_better,
            "sign_test_p": binomtest(a_better, a_better + b_better).pvalue if a_better + b_better else 1.0}


def break_even_value(comparison: dict[str, Any]) -> float | None:
    """What one fully right answer must be worth for contender b's extra cost to pay for its extra quality.

    Paying ``cost_b - cost_a`` more per task buys ``mean_b - mean_a`` more of a right answer per task,
    so b pays when a right answer is worth more than their ratio. ``None`` when b is not better on
    these tasks (then no value makes it pay); 0 when b is also no dearer.
    """
    gain = comparison["mean_b"] - comparison["mean_a"]
    extra = comparison["cost_per_task_b"] - comparison["cost_per_task_a"]
    if gain <= 0:
        return None
    return max(0.0, extra / gain)
