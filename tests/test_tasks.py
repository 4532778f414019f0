"""The course's task sets: files agree with their generators, answers are right, formats hold."""

import re

import pytest

from course_utils.tasks import arithmetic_problems, load_task, sentiment_texts


def test_files_are_what_the_generators_produce():
    assert load_task("arithmetic") == arithmetic_problems()
    assert load_task("sentiment") == sentiment_texts()


def test_arithmetic_answers_are_exact():
    problems = load_task("arithmetic")
    assert len(problems) == 120 and len({p["question"] for p in problems}) == 120
    first = problems[0]  # "A baker makes a loaves ... and b ..., then sells c."
    a, b, c = (int(x) for x in re.findall(r"\d+", first["question"]))
    assert first["answer"] == a + b - c
    assert all(isinstance(p["answer"], int) and p["answer"] >= 0 for p in problems)


def test_sentiment_set_is_balanced_and_at_least_200():
    rows = load_task("sentiment")
    assert len(rows) >= 200 and len({r["text"] for r in rows}) == len(rows)
    assert sum(r["label"] == "positive" for r in rows) == sum(r["label"] == "negative" for r in rows)


def test_multiple_choice_format():
    rows = load_task("multiple_choice")
    assert len(rows) >= 10
    for row in rows:
        assert len(row["choices"]) == 4 and row["answer"] in "ABCD" and row["question"].endswith("?")
    assert {row["answer"] for row in rows} == set("ABCD")


def test_passages_are_distinct_prose_of_a_few_hundred_words():
    rows = load_task("passages")
    assert len(rows) == 10 and len({r["title"] for r in rows}) == 10
    assert all(150 <= len(r["text"].split()) <= 260 and r["text"].endswith(".") for r in rows)


def test_unknown_task_is_explained():
    with pytest.raises(ValueError, match="arithmetic, sentiment, multiple_choice, passages"):
        load_task("mmlu")
