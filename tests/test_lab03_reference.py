"""Lab 03's reference solution agrees with torch's cosine similarity and the course's prompting code."""

import random
import re
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lab_solutions import solution_namespace

from course_utils.icl.prompting import Example, extract_number, few_shot_messages, majority_vote


@pytest.fixture(scope="module")
def lab():
    return solution_namespace("03_icl_and_cot_lab.ipynb", {"re": re, "Counter": Counter, "np": np})


def test_top_k_is_the_order_of_torchs_cosine_similarity(lab):
    generator = torch.Generator().manual_seed(0)
    for k in (1, 3, 10):
        query, pool = torch.randn(8, generator=generator), torch.randn(25, 8, generator=generator)
        similarity = F.cosine_similarity(pool, query[None], dim=1)
        expected = torch.argsort(-similarity, stable=True)[:k].tolist()
        assert lab["top_k_by_cosine"](query.tolist(), pool.tolist(), k) == expected


def test_few_shot_chat_is_the_course_message_builder(lab):
    examples = [("2 + 2", "4"), ("I loved it.", "positive"), ("a", "b")]
    for instruction in (None, "", "Answer briefly."):
        for count in range(4):
            chosen = examples[:count]
            expected = few_shot_messages([Example(i, o) for i, o in chosen], "query?", instruction)
            assert lab["few_shot_chat"]([list(e) for e in chosen], "query?", instruction) == expected


def test_self_consistency_is_extract_then_majority_vote(lab):
    rng = random.Random(0)
    phrasings = ["The answer is {}.", "{}", "so it is {} apples", "#### {}", "Answer: {}", "no number here",
                 "first 3, then {}", "{:,}"]
    for _ in range(300):
        samples = [rng.choice(phrasings).format(rng.choice([7, 12, -3, 1200, 2.5])) for _ in range(rng.randint(1, 6))]
        assert lab["self_consistency_answer"](samples) == majority_vote([extract_number(s) for s in samples]), samples
