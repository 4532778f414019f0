"""Lab 07's reference solution agrees with course_utils.context where they share a definition."""

import random

import pytest
from lab_solutions import solution_namespace

from course_utils.context import reciprocal_rank_fusion


@pytest.fixture(scope="module")
def lab():
    space = solution_namespace("07_context_management_lab.ipynb", {})
    exec("def count(text):\n    return len(text.split())\n", space)
    return space


def test_the_lab_fusion_is_the_course_fusion(lab):
    rng = random.Random(0)
    for _ in range(50):
        rankings = [rng.sample(range(12), rng.randint(0, 8)) for _ in range(rng.randint(1, 4))]
        k = rng.choice([0, 1, 60])
        if k == 0 and not any(rankings):
            continue
        assert lab["reciprocal_rank_fusion"](rankings, k) == reciprocal_rank_fusion(rankings, k)


def test_the_lab_middle_cut_keeps_both_ends_within_the_budget(lab):
    words = [f"w{i}" for i in range(50)]
    for max_tokens in range(1, 50):
        for share in (0.0, 0.3, 0.5, 1.0):
            cut = lab["middle_truncate"](" ".join(words), max_tokens, share).split()
            assert len(cut) == max_tokens and "…" in cut
            head = cut[:cut.index("…")]
            tail = cut[cut.index("…") + 1:]
            assert head == words[:len(head)] and tail == words[len(words) - len(tail):]


def test_the_lab_builder_respects_every_slot_on_random_budgets(lab):
    rng = random.Random(1)
    for _ in range(200):
        budget = {"window": rng.randint(10, 80), "reserve": rng.randint(0, 10), "system": 0.2, "history": 0.5,
                  "retrieval": 0.3}
        history = [[" ".join("h" * rng.randint(1, 3) for _ in range(rng.randint(1, 8)))] * 2 for _ in range(5)]
        chunks = [[" ".join(["c"] * rng.randint(1, 9)), rng.random()] for _ in range(4)]
        user_input = " ".join(["q"] * rng.randint(1, 12))
        usable = budget["window"] - budget["reserve"]
        if len(user_input.split()) > usable:
            with pytest.raises(ValueError):
                lab["build_context"](budget, "sys " * 10, history, chunks, user_input)
            continue
        built = lab["build_context"](budget, "sys " * 10, history, chunks, user_input)
        assert built["total"] <= usable and built["input"] == user_input
        assert built["history"] == history[len(history) - len(built["history"]):]
