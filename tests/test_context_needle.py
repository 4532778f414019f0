"""Needle in a haystack: the prompt is built as described and SmolLM2 finds a needle in a short context."""

import pytest

from course_utils.context.needle import ANSWER_LEAD, NEEDLE, needle_grid, needle_prompt, needle_trial
from course_utils.defaults import DEFAULT_MODEL

HAYSTACK = " ".join(f"Paragraph {i} is about the weather, which was mild and grey that week." for i in range(60))


@pytest.fixture(scope="module")
def smol():
    from course_utils.models import load_model

    return load_model(DEFAULT_MODEL, device="cpu")


def test_the_prompt_holds_the_requested_tokens_and_the_needle_at_its_depth(smol):
    _, tokenizer = smol
    count = lambda text: len(tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    needle = NEEDLE.format(colour="blue", code="4821")
    for depth in (0.0, 0.5, 1.0):
        prompt = needle_prompt(tokenizer, HAYSTACK, 200, depth, "4821")
        assert prompt.count(needle) == 1 and prompt.endswith(ANSWER_LEAD.format(colour="blue"))
        body = prompt[prompt.index("user\n") + 5:prompt.index("What is the access code")]
        assert count(body.replace(needle, "")) <= 200 + 4  # the haystack tokens, re-joined around the needle
        before = body[:body.index(needle)]
        assert abs(len(before) / len(body) - depth) < 0.1
    with pytest.raises(ValueError, match="depth"):
        needle_prompt(tokenizer, HAYSTACK, 200, 1.5, "4821")
    with pytest.raises(ValueError, match="fewer than"):
        needle_prompt(tokenizer, HAYSTACK, 10_000, 0.5, "4821")


def test_smollm2_reads_back_a_needle_in_a_short_context(smol):
    model, tokenizer = smol
    trial = needle_trial(model, tokenizer, HAYSTACK, 200, 0.5, "4821")
    assert trial.found and trial.log_prob > -2.0 and trial.prompt_tokens > 200
    grid = needle_grid(model, tokenizer, HAYSTACK, [100, 200], [0.0, 1.0], seed=3, progress=False)
    assert [(t.length, t.depth) for t in grid] == [(100, 0.0), (100, 1.0), (200, 0.0), (200, 1.0)]
