"""Routing: send each query to the cheapest path that will answer it well.

Two paths on one model (with a bigger model on a GPU, the same code routes between two models):

* **cheap**: the bare question and a grammar-constrained answer (a sentiment label out of two, a
  number for a word problem): a short prompt, a handful of output tokens;
* **expensive**: more context and more machinery: a sentiment label after eight labelled
  examples (few-shot), or a word problem handed to the calculator tool (a constrained tool call
  whose expression the application evaluates): several times the tokens.

:func:`run_paths` runs both on every item of a mixed workload (the course's sentiment reviews
and arithmetic word problems) and records, per item and path, correctness, tokens and latency.
:func:`router_scores` learns from those outcomes which queries need the expensive path: a
logistic regression on MiniLM embeddings of the query, every score out of fold (5-fold cross
validation), so that no query is scored by a router that saw its label. :func:`policy` turns a
set of routing decisions into accuracy, tokens and latency.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from course_utils.icl.prompting import extract_number
from course_utils.stats import Rate, mcnemar, rate
from course_utils.tasks import load_task

__all__ = ["PathOutcome", "RouteItem", "compare_policies", "policy", "route_items", "router_scores", "run_paths"]

@dataclass(frozen=True)
class RouteItem:
    task: str  # "sentiment" or "arithmetic"
    query: str
    expected: str | int


@dataclass(frozen=True)
class PathOutcome:
    correct: bool
    tokens: int  # prompt + completion: what an API would bill
    latency_s: float


def route_items(per_task: int, seed: int = 0) -> list[RouteItem]:
    """``per_task`` sentiment reviews and as many arithmetic word problems, shuffled."""
    rng = random.Random(seed)
    reviews = rng.sample(load_task("sentiment"), per_task)
    problems = rng.sample(load_task("arithmetic"), per_task)
    items = [RouteItem("sentiment", r["text"], r["label"]) for r in reviews]
    items += [RouteItem("arithmetic", p["question"], int(p["answer"])) for p in problems]
    rng.shuffle(items)
    return items


def _examples(seed: int = 99) -> list:
    from course_utils.icl.prompting import Example

    rows = random.Random(seed).sample(load_task("sentiment"), 8)
    return [Example(f"Is this review positive or negative?\n\n{r['text']}", r["label"]) for r in rows]


def _paths(item: RouteItem, examples: list) -> dict[str, tuple[list[dict[str, str]], Any]]:
    """Each path's messages and structured-output constraint for ``item``."""
    from course_utils.apps.toolbox import TOOLS
    from course_utils.icl.prompting import few_shot_messages
    from course_utils.serving import StructuredOutputs
    from course_utils.serving.tools import ToolDef, plan_chat

    if item.task == "sentiment":
        question = f"Is this review positive or negative?\n\n{item.query}"
        labels = StructuredOutputs(choice=["positive", "negative"])
        return {"cheap": ([{"role": "user", "content": question}], labels),
                "expensive": (few_shot_messages(examples, question), labels)}
    calculator = [ToolDef(**t) for t in TOOLS if t["function"]["name"] == "calculator"]
    plan = plan_chat([{"role": "user", "content": item.query}], calculator, "required")
    return {"cheap": ([{"role": "user", "content": f"{item.query}\nReply with the number only."}],
                      StructuredOutputs(regex="-?[0-9]{1,7}")),
            "expensive": (plan.messages, plan.structured)}


def _answer(item: RouteItem, text: str, path: str) -> str | float | None:
    from course_utils.apps.toolbox import safe_eval
    from course_utils.serving.tools import ChatPlan, parse_reply

    if item.task == "sentiment":
        return text.strip()
    if path == "cheap":
        return extract_number(text)
    _, calls = parse_reply(text, ChatPlan([], tool_mode="required", tool_names=["calculator"]))
    try:
        return safe_eval(json.loads(calls[0]["function"]["arguments"])["expression"]) if calls else None
    except ValueError:
        return None


def run_paths(llm, items: list[RouteItem], max_tokens: int = 48,
              expensive_llm=None) -> dict[str, list[PathOutcome]]:
    """Both paths on every item with ``llm`` (a course ``LLM``), greedy; each path as one batch.
    With ``expensive_llm`` (a bigger model, e.g. on a GPU), the expensive path is instead the cheap
    path's prompt answered by that model: routing between two model sizes."""
    from course_utils.serving import SamplingParams

    examples = _examples()
    plans = [_paths(item, examples) for item in items]
    runs = {"cheap": (llm, "cheap"), "expensive": (expensive_llm, "cheap") if expensive_llm else (llm, "expensive")}
    outcomes = {}
    for path, (engine, shape) in runs.items():
        template = engine.engine.tokenizer.apply_chat_template
        prompts = [template(p[shape][0], tokenize=False, add_generation_prompt=True) for p in plans]
        params = [SamplingParams(temperature=0, max_tokens=max_tokens, structured_outputs=p[shape][1]) for p in plans]
        outputs = engine.generate(prompts, params)
        outcomes[path] = [PathOutcome(_answer(item, out.outputs[0].text, shape) == item.expected,
                                      len(out.prompt_token_ids) + len(out.outputs[0].token_ids),
                                      out.metrics.finish_time - out.metrics.arrival_time)
                          for item, out in zip(items, outputs, strict=True)]
    return outcomes


def router_scores(embeddings: np.ndarray, needs_expensive: list[bool], folds: int = 5, seed: int = 0) -> np.ndarray:
    """(N,) out-of-fold probabilities that each query needs the expensive path, from a logistic
    regression on (N, D) query embeddings; 0.0 everywhere when no query needs it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(needs_expensive, dtype=int)
    scores = np.zeros(len(labels))
    if labels.sum() < folds or (1 - labels).sum() < folds:  # too few of one class to learn from
        return scores + labels.mean()
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(embeddings, labels):
        model = LogisticRegression(max_iter=1000, class_weight="balanced").fit(embeddings[train], labels[train])
        scores[test] = model.predict_proba(embeddings[test])[:, 1]
    return scores


def policy(outcomes: dict[str, list[PathOutcome]], expensive: list[bool]) -> dict[str, Any]:
    """Accuracy (a Rate), mean tokens and mean latency of answering item i by the expensive path
    where ``expensive[i]``, else by the cheap one."""
    chosen = [outcomes["expensive" if e else "cheap"][i] for i, e in enumerate(expensive)]
    accuracy: Rate = rate(sum(o.correct for o in chosen), len(chosen))
    return {"accuracy": accuracy, "tokens": float(np.mean([o.tokens for o in chosen])),
            "latency_s": float(np.mean([o.latency_s for o in chosen])), "share_expensive": float(np.mean(expensive))}


def compare_policies(outcomes: dict[str, list[PathOutcome]], scores: np.ndarray, needs_expensive: list[bool],
                     threshold: float = 0.5) -> dict[str, Any]:
    """Always-cheap, always-expensive, the router (expensive where ``scores >= threshold``) and the
    oracle (expensive exactly where it is needed), with McNemar's exact test of the router against
    each fixed path, a threshold sweep, and the article's 40-70% / < 2% claim checked for the router
    relative to always-expensive, as a sentence printed from the figures."""
    n = len(needs_expensive)
    decisions = {"always cheap": [False] * n, "always expensive": [True] * n,
                 "router": [bool(s >= threshold) for s in scores], "oracle": list(needs_expensive)}
    policies = {name: policy(outcomes, chosen) for name, chosen in decisions.items()}

    def correct(name: str) -> list[bool]:
        return [outcomes["expensive" if e else "cheap"][i].correct for i, e in enumerate(decisions[name])]

    tests = {}
    for other in ("always cheap", "always expensive"):
        test = mcnemar(correct("router"), correct(other))
        tests[f"router vs {other}"] = {"router_only": test["a_only"], "other_only": test["b_only"],
                                       "mcnemar_exact_p": test["mcnemar_exact_p"]}
    sweep = [{"threshold": t, "share_expensive": round(float(np.mean(scores >= t)), 3),
              **{k: (v.as_dict() if isinstance(v, Rate) else round(v, 3))
                 for k, v in policy(outcomes, [bool(s >= t) for s in scores]).items() if k != "share_expensive"}}
             for t in (0.1, 0.3, 0.5, 0.7, 0.9)]
    router, expensive = policies["router"], policies["always expensive"]
    saving = 1 - router["tokens"] / expensive["tokens"]
    loss = expensive["accuracy"].value - router["accuracy"].value
    holds = 0.40 <= saving and loss < 0.02
    verdict = (f"router vs always-expensive: {saving:.0%} fewer tokens, accuracy {'down' if loss > 0 else 'up'} "
               f"{abs(loss):.1%} (n = {n}); the article's 40-70% saving with < 2% loss "
               f"{'holds' if holds else 'does not hold'} here")
    as_json = {name: {k: (v.as_dict() if isinstance(v, Rate) else round(v, 4)) for k, v in row.items()}
               for name, row in policies.items()}
    return {"policies": as_json, "tests": tests, "threshold_sweep": sweep,
            "token_saving_vs_expensive": round(saving, 4), "accuracy_change_vs_expensive": round(-loss, 4),
            "article_claim_holds": holds, "verdict": verdict}
