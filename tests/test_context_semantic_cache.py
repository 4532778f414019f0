"""The semantic cache: paraphrases hit, near-misses are refused at a strict threshold, rates by hand."""

import pytest

from course_utils.context.semantic_cache import SemanticCache, cache_rates

STORED = [("What time does the museum open on Sundays?", "10 am"),
          ("How do I reset my account password?", "Use the 'forgot password' link.")]
PARAPHRASES = [("When does the museum open on a Sunday?", 0), ("How can I reset the password of my account?", 1)]
NEAR_MISSES = ["What time does the museum close on Sundays?", "How do I delete my account?"]


@pytest.fixture(scope="module")
def embedder():
    from course_utils.models import load_embedder

    return load_embedder()


def make(embedder, threshold):
    cache = SemanticCache(embedder, threshold)
    for question, answer in STORED:
        cache.add(question, answer)
    return cache


def test_a_paraphrase_finds_the_stored_answer_and_an_unrelated_question_does_not(embedder):
    cache = make(embedder, 0.8)
    assert cache.lookup("When does the museum open on a Sunday?") == "10 am"
    assert cache.lookup("Which planet is the largest?") is None
    assert SemanticCache(embedder).lookup("anything") is None  # an empty cache answers nothing


def test_the_threshold_trades_hits_for_false_hits(embedder):
    loose, strict = make(embedder, 0.5), make(embedder, 0.995)
    loose_rates = cache_rates(loose, PARAPHRASES, NEAR_MISSES)
    strict_rates = cache_rates(strict, PARAPHRASES, NEAR_MISSES)
    assert loose_rates.hit_rate == 1.0 and loose_rates.false_hit_rate > 0  # near-misses look alike
    assert strict_rates.false_hit_rate == 0.0 and strict_rates.hit_rate < loose_rates.hit_rate
    with pytest.raises(ValueError, match="threshold"):
        SemanticCache(embedder, 1.5)
    with pytest.raises(ValueError, match="paraphrase"):
        cache_rates(loose, [], NEAR_MISSES)
