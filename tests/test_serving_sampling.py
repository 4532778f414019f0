"""The sampler against transformers' own logits processors, and its per-request seeds."""

import pytest
import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

from course_utils.serving.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    row_argmax,
    sample,
    top_k_mask,
    top_p_mask,
)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.99])
def test_top_p_keeps_what_transformers_keeps(p):
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(1, 50, generator=gen) * 3
        theirs = torch.isinf(TopPLogitsWarper(p, min_tokens_to_keep=1)(None, logits.clone()))[0]
        assert torch.equal(top_p_mask(logits[0], p), theirs)


def test_top_p_on_a_hand_case():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert top_p_mask(probs.log(), 0.5).tolist() == [False, True, True, True]  # 0.5 reaches 0.5
    assert top_p_mask(probs.log(), 0.6).tolist() == [False, False, True, True]
    assert top_p_mask(probs.log(), 0.01).tolist() == [False, True, True, True]  # the top token always stays
    assert not top_p_mask(probs.log(), 1.0).any()


@pytest.mark.parametrize("k", [1, 3, 10, 49])
def test_top_k_keeps_what_transformers_keeps(k):
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(k))
    theirs = torch.isinf(TopKLogitsWarper(k)(None, logits.clone()))[0]
    assert torch.equal(top_k_mask(logits[0], k), theirs)
    assert not top_k_mask(logits[0], 0).any() and not top_k_mask(logits[0], -1).any()


def test_repetition_penalty_matches_transformers():
    logits = torch.randn(1, 30, generator=torch.Generator().manual_seed(1))
    seen = torch.tensor([0, 3, 3, 7, 29])
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(seen[None], logits.clone())[0]
    assert torch.allclose(apply_repetition_penalty(logits[0], seen, 1.3), theirs)


def test_greedy_seeds_and_batch_independence():
    logits = torch.randn(3, 100, generator=torch.Generator().manual_seed(2))
    seen = [torch.tensor([], dtype=torch.long)] * 3
    greedy = SamplingParams(temperature=0)
    assert sample(logits, [greedy] * 3, seen, [None] * 3).tolist() == logits.argmax(-1).tolist()
    seeded = SamplingParams(temperature=1.0, seed=7)
    alone = sample(logits[1:2], [seeded], seen[:1], [seeded.generator()])
    in_batch = sample(logits, [SamplingParams(temperature=0.8, seed=1), seeded, greedy], seen,
                      [SamplingParams(seed=1).generator(), seeded.generator(), None])
    assert in_batch[1] == alone[0]  # a request's draw does not depend on its neighbours


def test_sampled_frequencies_follow_the_truncated_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    params = SamplingParams(temperature=1.0, top_p=0.8, seed=0)
    gen = params.generator()
    draws = torch.stack([sample(probs.log()[None], [params], [torch.tensor([], dtype=torch.long)], [gen])
                         for _ in range(4000)]).flatten()
    counts = torch.bincount(draws, minlength=4).float() / len(draws)
    assert counts[2:].sum() == 0  # outside the nucleus: never drawn
    assert abs(counts[0] - 0.5 / 0.8) < 0.03 and abs(counts[1] - 0.3 / 0.8) < 0.03


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -0.1}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_p": 1.1}, "top_p"),
    ({"top_k": -2}, "top_k"), ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 2.5}, "max_tokens"),
    ({"repetition_penalty": 0}, "repetition_penalty"), ({"stop": [""]}, "stop"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"), ({"seed": "x"}, "seed"),
])
def test_bad_parameters_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)
    assert SamplingParams(stop="###").stop == ["###"]


@pytest.mark.parametrize("field", ["temperature", "top_p", "repetition_penalty"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_sampling_params_refuse_non_finite_and_boolean_numbers(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_seeds_are_checked_against_what_torch_accepts():
    assert SamplingParams(seed=2**64 - 1).generator() is not None
    assert SamplingParams(seed=-(2**63)).generator() is not None
    for seed in (2**64, -(2**63) - 1, True, 1.5):
        with pytest.raises(ValueError, match="seed must be an integer"):
            SamplingParams(seed=seed)


@pytest.mark.parametrize("params", [
    dict(temperature=1e-40), dict(temperature=5e-324), dict(top_p=1e-300), dict(top_p=1e-300, temperature=5e-324),
    dict(repetition_penalty=1e-40), dict(repetition_penalty=5e-324), dict(repetition_penalty=1e300),
], ids=str)
def test_any_accepted_value_samples_a_valid_token(params):
    # these values used to turn the distribution into inf/NaN and crash torch.multinomial
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * 5
    seen = [torch.tensor([1, 2, int(logits[i].argmax())]) for i in range(3)]
    sp = SamplingParams(seed=0, **params)
    tokens = sample(logits, [sp] * 3, seen, [sp.generator() for _ in range(3)])
    assert ((tokens >= 0) & (tokens < 50)).all()
    if params.get("repetition_penalty", 1.0) == 1.0:  # tiny temperature or top_p: the most likely token
        assert tokens.tolist() == logits.argmax(-1).tolist()


def test_min_p_removes_what_transformers_removes():
    from transformers.generation.logits_process import MinPLogitsWarper

    from course_utils.serving.sampling import min_p_mask

    torch.manual_seed(0)
    for min_p in (0.01, 0.1, 0.5, 0.99):
        logits = torch.randn(1000) * 3
        theirs = MinPLogitsWarper(min_p)(None, logits[None].clone())[0] == -float("inf")
        assert torch.equal(min_p_mask(logits, min_p), theirs)
    assert not min_p_mask(torch.zeros(5), 1.0).all()  # the top token always stays


def test_presence_and_frequency_penalties_follow_openais_formula():
    from course_utils.serving.sampling import apply_output_penalties

    logits = torch.zeros(6, dtype=torch.float64)
    output = torch.tensor([2, 2, 2, 4])
    got = apply_output_penalties(logits, output, presence=0.5, frequency=0.25)
    expected = torch.tensor([0, 0, -(0.5 + 3 * 0.25), 0, -(0.5 + 0.25), 0], dtype=torch.float64)
    assert torch.equal(got, expected)
    negative = apply_output_penalties(logits, output, presence=-1.0, frequency=0.0)
    assert negative[2] == 1.0 and negative[0] == 0.0  # a negative penalty favours repeating


def test_a_frequency_penalty_changes_greedy_output_only_through_the_output(smollm2):
    from course_utils.serving import LLM
    from course_utils.serving.llm import Llama

    model, tokenizer = smollm2
    llm = LLM.from_model(Llama.from_hf(model), tokenizer)
    prompt = "List the numbers: one, two, one, two, one, two,"
    plain = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=24))[0].outputs[0].token_ids
    penalised = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=24, frequency_penalty=2.0))[0]
    ids = penalised.outputs[0].token_ids
    assert ids != plain
    counts = torch.bincount(torch.tensor(ids)).max().item()
    assert counts <= torch.bincount(torch.tensor(plain)).max().item()


@pytest.mark.parametrize(("field", "value"), [("presence_penalty", 2.5), ("frequency_penalty", float("nan")),
                                              ("min_p", -0.1), ("min_p", 1.5)])
def test_new_sampling_fields_are_checked(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


@pytest.mark.parametrize("all_greedy", [True, False])
def test_greedy_rows_never_pick_nan_and_pick_infinity_first(all_greedy):
    nan, inf = float("nan"), float("inf")
    logits = torch.tensor([[0.1, nan, 2.0, -1.0],  # argmax alone would answer 1, the NaN
                           [0.0, inf, 3.0, inf],  # the first +inf
                           [nan, nan, nan, nan],  # nothing to prefer: a valid id all the same
                           [1.0, 5.0, 2.0, 0.0]])
    greedy = SamplingParams(temperature=0)
    params = [greedy] * 4 if all_greedy else [greedy, greedy, greedy, SamplingParams(temperature=0, top_k=1)]
    out = sample(logits, params, [torch.tensor([], dtype=torch.long)] * 4, [None] * 4).tolist()
    assert out[0] == 2 and out[1] == 1 and 0 <= out[2] < 4 and out[3] == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_row_argmax_is_torch_argmax_on_ties_nan_and_minus_infinity(dtype):
    logits = torch.randn(8, 1000, generator=torch.Generator().manual_seed(0)).to(dtype)
    logits[1, [10, 20, 900]] = 50.0  # a tie: the first wins
    logits[2, [30, 40]] = float("nan")  # NaN ranks first, the first NaN wins
    logits[3] = float("-inf")
    logits[4, 999] = float("inf")
    logits[5] = 0.0
    ids = row_argmax(logits)
    assert ids.dtype == torch.long and ids.shape == (8,)
    assert torch.equal(ids, logits.argmax(-1))
    assert ids[1:6].tolist() == [10, 30, 0, 999, 0]
    strided = logits.t().contiguous().t()  # the same values, columns contiguous
    assert torch.equal(row_argmax(strided), ids)
