"""Lab 00's reference solution agrees with torch's softmax, the engine's top-p, and a brute-force budget."""

import math
import random

import numpy as np
import pytest
import torch
from lab_solutions import solution_namespace

from course_utils.serving.sampling import top_p_mask
from course_utils.tokens import get_encoding


@pytest.fixture(scope="module")
def lab():
    return solution_namespace("00_getting_started_lab.ipynb", {"math": math, "encoding": get_encoding("cl100k_base")})


@pytest.mark.parametrize("temperature", [0.1, 0.7, 1.0, 3.0])
def test_softmax_with_temperature_is_torchs_softmax_of_scaled_logits(lab, temperature):
    generator = torch.Generator().manual_seed(int(temperature * 10))
    for _ in range(10):
        logits = torch.randn(17, generator=generator, dtype=torch.float64) * 20  # large values: must not overflow
        expected = torch.softmax(logits / temperature, dim=-1)
        got = torch.tensor(lab["softmax_with_temperature"](logits.tolist(), temperature), dtype=torch.float64)
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.999, 1.0])
def test_top_p_keeps_what_the_engines_sampler_keeps_and_renormalises(lab, p):
    generator = torch.Generator().manual_seed(int(p * 1000))
    for _ in range(20):
        probs = torch.softmax(torch.randn(40, generator=generator, dtype=torch.float64) * 3, dim=-1)
        got = np.asarray(lab["top_p_filter"](probs.tolist(), p))
        kept = ~top_p_mask(probs.log(), p).numpy()
        assert ((got > 0) == kept).all()
        assert np.allclose(got[kept], probs.numpy()[kept] / probs.numpy()[kept].sum())


def test_recent_messages_is_the_longest_suffix_within_the_budget(lab):
    encoding = get_encoding("cl100k_base")
    words = "the model reads tokens not words and every message costs what its text costs".split()
    rng = random.Random(0)
    for _ in range(200):
        messages = [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(rng.randint(0, 6))]
        budget = rng.randint(0, 40)
        costs = [len(encoding.encode(m)) for m in messages]
        # brute force: of all suffixes, the longest whose total cost fits
        start = min((i for i in range(len(messages) + 1) if sum(costs[i:]) <= budget), default=len(messages))
        assert lab["recent_messages_within_budget"](messages, budget) == messages[start:]
