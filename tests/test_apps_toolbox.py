"""The chapter's tools: the calculator against Python's own arithmetic, conversions both ways, the
lookup against the price table, execute() on hostile calls, and the scoring of calls."""

import json
import math
import random

import jsonschema
import pytest

from course_utils.apps.toolbox import TOOLS, convert_units, execute, load_requests, lookup_model, safe_eval, score_call
from course_utils.tokens import load_prices


def test_the_calculator_agrees_with_python_on_random_arithmetic():
    rng = random.Random(0)

    def expression(depth=0):
        if depth > 3 or rng.random() < 0.3:
            return str(rng.choice([rng.randint(0, 50), round(rng.uniform(0, 9), 2)]))
        op = rng.choice(["+", "-", "*", "/"])
        return f"({expression(depth + 1)} {op} {expression(depth + 1)})"

    for _ in range(500):
        text = expression()
        try:
            expected = eval(text)  # noqa: S307 - the reference, on expressions this test built itself
        except ZeroDivisionError:
            with pytest.raises(ValueError):
                safe_eval(text)
            continue
        assert math.isclose(safe_eval(text), expected, rel_tol=1e-12, abs_tol=1e-12), text


@pytest.mark.parametrize("hostile", ["__import__('os').system('true')", "x + 1", "len('abc')", "(1).real",
                                     "[1, 2]", "2 ** 1000", "9 ** 9 ** 9", "1 / 0", "'a' * 3", "True + 1", "",
                                     "1 +", "lambda: 1", "a" * 300])
def test_the_calculator_refuses_anything_but_arithmetic(hostile):
    with pytest.raises(ValueError):
        safe_eval(hostile)


def test_conversions_match_the_definitions_and_invert():
    assert convert_units(1, "mi", "km") == pytest.approx(1.609344)
    assert convert_units(100, "c", "f") == pytest.approx(212) and convert_units(-40, "f", "c") == pytest.approx(-40)
    assert convert_units(1, "lb", "kg") == pytest.approx(0.45359237)
    rng = random.Random(1)
    for a, b in [("km", "mi"), ("kg", "lb"), ("c", "f")]:
        v = rng.uniform(-100, 100)
        assert convert_units(convert_units(v, a, b), b, a) == pytest.approx(v)
    with pytest.raises(ValueError):
        convert_units(1, "km", "kg")


def test_the_lookup_reads_the_price_table():
    for price in load_prices():
        if price.tier != "standard":  # the tool answers with each model's standard rate
            continue
        assert lookup_model(price.model, "context_window") == price.context_window
        assert lookup_model(price.model, "output_usd_per_m") == price.output_usd_per_m
    with pytest.raises(ValueError):
        lookup_model("no-such-model", "provider")


def test_execute_never_raises_and_answers_errors_as_values():
    assert execute("convert_units", '{"value": 5, "from_unit": "mi", "to_unit": "km"}') == {"result": 8.04672}
    for name, arguments in [("calculator", "{not json"), ("calculator", '{"expression": "import os"}'),
                            ("convert_units", '{"value": "5", "from_unit": "mi", "to_unit": "km"}'),
                            ("lookup_model", '{"model": "gpt-9", "field": "provider"}'), ("rm_rf", "{}"),
                            ("calculator", '{"expression": 5}'), ("calculator", "[]")]:
        result = execute(name, arguments)
        assert set(result) == {"error"} and "\n" not in result["error"], (name, arguments, result)


def test_the_request_set_is_answerable_by_its_own_tools():
    tasks = load_requests()
    assert len(tasks) == 48 and {t["tool"] for t in tasks} == {"calculator", "convert_units", "lookup_model"}
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for task in tasks:
        jsonschema.validate(task["arguments"], schemas[task["tool"]])
        assert "result" in execute(task["tool"], task["arguments"]), task
        assert score_call(task["tool"], json.dumps(task["arguments"]), task).right_arguments


def test_scoring_tells_invalid_wrong_tool_and_wrong_arguments_apart():
    task = {"request": "17 * 23?", "tool": "calculator", "arguments": {"expression": "17 * 23"}}
    assert score_call("calculator", '{"expression": "23*17"}', task).right_arguments  # same value
    assert not score_call("calculator", '{"expression": "17 + 23"}', task).right_arguments
    wrong_tool = score_call("convert_units", '{"value": 17, "from_unit": "km", "to_unit": "mi"}', task)
    assert wrong_tool.valid and not wrong_tool.right_tool
    invalid = score_call("calculator", '{"expr": "17 * 23"}', task)
    assert invalid.called and not invalid.valid
    assert score_call(None, None, task) == score_call(None, None, task) and not score_call(None, None, task).called
