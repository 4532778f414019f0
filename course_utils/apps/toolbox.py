"""The chapter's three tools, and how well a model calls them.

* ``calculator``: an arithmetic expression, evaluated by walking its syntax tree (numbers,
  + - * / ** and parentheses only: never ``eval``);
* ``convert_units``: km/mi, kg/lb, Celsius/Fahrenheit;
* ``lookup_model``: one field of one row of the course's price table (``data/prices.csv``).

:data:`TOOLS` are their OpenAI definitions; :func:`execute` runs a call the way an application
does (an error comes back as a value for the model to read). :func:`evaluate_calls` asks a server
each request of ``data/tool_requests.jsonl`` with a given ``tool_choice`` and scores the replies:
a *valid* call names a tool and has arguments its schema accepts; a *right* call is the request's
tool with the request's arguments.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
import openai

from course_utils.tasks import load_task
from course_utils.tokens import find_price, load_prices

__all__ = ["TOOLS", "CallScore", "convert_units", "evaluate_calls", "execute", "load_requests", "lookup_model",
           "safe_eval", "score_call"]

_OPS: dict[type, Callable] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                              ast.Div: operator.truediv, ast.Pow: operator.pow, ast.USub: operator.neg,
                              ast.UAdd: operator.pos}
_UNITS = {("km", "mi"): lambda v: v / 1.609344, ("mi", "km"): lambda v: v * 1.609344,
          ("kg", "lb"): lambda v: v / 0.45359237, ("lb", "kg"): lambda v: v * 0.45359237,
          ("c", "f"): lambda v: v * 9 / 5 + 32, ("f", "c"): lambda v: (v - 32) * 5 / 9}
FIELDS = ("provider", "context_window", "input_usd_per_m", "output_usd_per_m")


def safe_eval(expression: str) -> float:
    """The value of an arithmetic expression; ValueError for anything that is not one."""
    if not isinstance(expression, str) or len(expression) > 200:
        raise ValueError("an expression is a string of at most 200 characters")

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise ValueError("exponents are limited to 100")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        raise ValueError(f"not arithmetic: {ast.dump(node)[:60]}")

    try:
        result = value(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ZeroDivisionError, OverflowError, RecursionError) as err:
        raise ValueError(f"cannot evaluate {expression!r}: {type(err).__name__}") from None
    if isinstance(result, complex) or not math.isfinite(result):
        raise ValueError(f"{expression!r} has no finite real value")
    return float(result)


def convert_units(value: float, from_unit: str, to_unit: str) -> float:
    if from_unit == to_unit:
        return float(value)
    if (from_unit, to_unit) not in _UNITS:
        raise ValueError(f"cannot convert {from_unit} to {to_unit}")
    return _UNITS[from_unit, to_unit](float(value))


def lookup_model(model: str, field: str) -> str | float | int:
    if field not in FIELDS:
        raise ValueError(f"field must be one of {', '.join(FIELDS)}")
    return getattr(find_price(model), field)


def _tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": False}}}


TOOLS = [
    _tool("calculator", "Evaluate an arithmetic expression written with the question's numbers and + - * / ** ( ).",
          {"expression": {"type": "string", "maxLength": 40, "pattern": "^[0-9+*/(). -]+$"}}, ["expression"]),
    _tool("convert_units", "Convert a value between kilometres and miles, kilograms and pounds, or Celsius and "
          "Fahrenheit.", {"value": {"type": "number"}, "from_unit": {"enum": ["km", "mi", "kg", "lb", "c", "f"]},
                          "to_unit": {"enum": ["km", "mi", "kg", "lb", "c", "f"]}}, ["value", "from_unit", "to_unit"]),
    _tool("lookup_model", "Look up a language model's provider, context window, or price per million input or "
          "output tokens in the course's price table.",
          {"model": {"enum": sorted({p.model for p in load_prices()})}, "field": {"enum": list(FIELDS)}},
          ["model", "field"]),
]
_SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
_RUN = {"calculator": lambda a: safe_eval(a["expression"]), "convert_units": lambda a: convert_units(**a),
        "lookup_model": lambda a: lookup_model(**a)}


def execute(name: str, arguments: str | dict) -> dict[str, Any]:
    """Run one call as an application would: ``{"result": ...}`` or ``{"error": "..."}``, never raising."""
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
        if name not in _SCHEMAS:
            raise ValueError(f"no tool named {name!r}")
        jsonschema.validate(args, _SCHEMAS[name])
        return {"result": _RUN[name](args)}
    except (ValueError, TypeError, jsonschema.ValidationError) as err:
        message = err.message if isinstance(err, jsonschema.ValidationError) else str(err)
        return {"error": message.splitlines()[0][:200]}


def load_requests() -> list[dict[str, Any]]:
    """``data/tool_requests.jsonl``: request, tool, arguments (see the data README)."""
    return load_task("tool_requests")


@dataclass(frozen=True)
class CallScore:
    called: bool  # the reply held a tool call
    valid: bool  # ... to a known tool, with arguments its schema accepts
    right_tool: bool
    right_arguments: bool  # right tool and arguments that mean what the request asked


def score_call(name: str | None, arguments: str | None, task: dict[str, Any]) -> CallScore:
    if name is None:
        return CallScore(False, False, False, False)
    try:
        args = json.loads(arguments or "")
        jsonschema.validate(args, _SCHEMAS[name])
        valid = True
    except (ValueError, KeyError, jsonschema.ValidationError):
        return CallScore(True, False, name == task["tool"], False)
    right_tool = name == task["tool"]
    if not right_tool:
        return CallScore(True, valid, False, False)
    expected = task["arguments"]
    if name == "calculator":
        try:
            same = math.isclose(safe_eval(args["expression"]), safe_eval(expected["expression"]), rel_tol=1e-9)
        except ValueError:
            same = False
    else:
        same = all(args.get(k) == v or (isinstance(v, (int, float)) and isinstance(args.get(k), (int, float))
                                         and math.isclose(args[k], v, rel_tol=1e-9)) for k, v in expected.items())
    return CallScore(True, valid, True, same)


async def evaluate_calls(base_url: str, model: str, tasks: list[dict[str, Any]], tool_choice: str,
                         max_tokens: int = 96, concurrency: int = 8) -> list[CallScore]:
    """Ask each task's request with all :data:`TOOLS` and ``tool_choice`` (greedy); score each reply."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=300)
    gate = asyncio.Semaphore(concurrency)

    async def one(task: dict[str, Any]) -> CallScore:
        async with gate:
            reply = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": task["request"]}], tools=TOOLS,
                tool_choice=tool_choice, max_tokens=max_tokens, temperature=0)
        calls = reply.choices[0].message.tool_calls or []
        first = calls[0].function if calls else None
        return score_call(first.name if first else None, first.arguments if first else None, task)

    try:
        return list(await asyncio.gather(*(one(task) for task in tasks)))
    finally:
        await client.close()


def constraint_cost(llm, tasks: list[dict[str, Any]], max_tokens: int = 96) -> dict[str, Any]:
    """Per-token decode time of each request's constrained tool call (``tool_choice="required"``)
    against the same prompt decoded unconstrained for the same number of tokens, one request at a
    time on ``llm`` (a course ``LLM``): the per-request ratios, their mean and a 95% t-interval."""
    import time

    import numpy as np
    from scipy import stats

    from course_utils.serving import SamplingParams
    from course_utils.serving.tools import ToolDef, plan_chat

    tools = [ToolDef(**tool) for tool in TOOLS]
    ratios, constrained_s, free_s = [], [], []
    tokenizer = llm.engine.tokenizer
    for task in tasks:
        plan = plan_chat([{"role": "user", "content": task["request"]}], tools, "required")
        prompt = tokenizer.apply_chat_template(plan.messages, tokenize=False, add_generation_prompt=True)
        started = time.perf_counter()
        out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=max_tokens,
                                                    structured_outputs=plan.structured))[0].outputs[0]
        with_grammar = (time.perf_counter() - started) / len(out.token_ids)
        started = time.perf_counter()
        llm.generate([prompt], SamplingParams(temperature=0, max_tokens=len(out.token_ids), ignore_eos=True))
        without = (time.perf_counter() - started) / len(out.token_ids)
        ratios.append(with_grammar / without)
        constrained_s.append(with_grammar)
        free_s.append(without)
    mean = float(np.mean(ratios))
    half = float(stats.t.ppf(0.975, len(ratios) - 1) * stats.sem(ratios)) if len(ratios) > 1 else float("nan")
    return {"n": len(ratios), "ratio_mean": round(mean, 3),
            "ratio_ci95": [round(mean - half, 3), round(mean + half, 3)],
            "constrained_ms_per_token_median": round(1000 * float(np.median(constrained_s)), 2),
            "free_ms_per_token_median": round(1000 * float(np.median(free_s)), 2)}
