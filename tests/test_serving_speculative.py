"""Speculative decoding: the acceptance rule keeps the target's distribution; greedy output is unchanged."""

import pytest
import torch

from course_utils.serving.speculative import (
    ModelDraft,
    expected_tokens_per_step,
    greedy_agreement,
    ngram_draft,
    speculative_generate,
    truncated_draft,
    verify,
)


def test_expected_tokens_per_step_closed_form():
    assert expected_tokens_per_step(0.0, 4) == 1.0
    assert expected_tokens_per_step(1.0, 4) == 5.0
    assert expected_tokens_per_step(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)
    with pytest.raises(ValueError):
        expected_tokens_per_step(1.5, 2)


def test_ngram_draft_proposes_what_followed_the_latest_match():
    assert ngram_draft([1, 2, 3, 9, 1, 2, 3, 7, 1, 2], 3) == [3, 7, 1]  # latest "1 2" is at 4
    assert ngram_draft([5, 6, 7, 5], 2) == [6, 7]  # falls back to a 1-gram
    assert ngram_draft([1, 2, 3], 4) == []


@pytest.mark.parametrize("deterministic", [False, True])
def test_the_first_emitted_token_follows_the_target_distribution(deterministic):
    p = torch.tensor([0.5, 0.2, 0.2, 0.1])
    q = torch.tensor([0.1, 0.6, 0.2, 0.1])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    trials = 20000
    for _ in range(trials):
        draft = 1 if deterministic else int(torch.multinomial(q, 1, generator=gen))
        emitted, _ = verify(torch.stack([p, p]), [draft], None if deterministic else q[None], gen)
        counts[emitted[0]] += 1
    assert torch.allclose(counts / trials, p, atol=0.015)  # 4 standard errors at most


def test_greedy_verification_keeps_drafts_while_they_match_the_argmax():
    probs = torch.eye(5)[[2, 4, 1, 3]]  # the target's argmax at each of 4 positions
    assert verify(probs, [2, 4, 0], None, greedy=True) == ([2, 4, 1], 2)
    assert verify(probs, [2, 4, 1], None, greedy=True) == ([2, 4, 1, 3], 3)


@pytest.fixture(scope="module")
def target(smollm2):
    from course_utils.architecture.transformer import Llama

    return Llama.from_hf(smollm2[0])


@pytest.mark.parametrize("draft_kind", ["ngram", "model"])
def test_greedy_speculative_output_is_token_identical_to_plain_greedy(target, smollm2, draft_kind):
    tokenizer = smollm2[1]
    prompt = tokenizer("def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):",
                       add_special_tokens=False)["input_ids"]
    plain = target.generate_greedy(torch.tensor([prompt]), 24)[0, len(prompt):].tolist()
    draft = "ngram" if draft_kind == "ngram" else ModelDraft(truncated_draft(target, 12))
    tokens, stats = speculative_generate(target, prompt, 24, gamma=4, draft=draft)
    assert tokens == plain
    assert stats.emitted == 24 and stats.target_passes < 24  # some drafts were accepted
    assert 0 < stats.acceptance_rate <= 1


def test_truncated_draft_shares_the_targets_weights(target):
    draft = truncated_draft(target, 4)
    assert draft.config.n_layers == 4 and target.config.n_layers > 4
    assert draft.layers[0] is target.layers[0] and draft.lm_head.weight is target.lm_head.weight
    with pytest.raises(ValueError, match="n_layers"):
        truncated_draft(target, target.config.n_layers)


def test_greedy_agreement_counts_the_positions_where_the_argmaxes_match(target, smollm2):
    tokens = smollm2[1]("The quick brown fox jumps over the lazy dog. The quick brown fox",
                        add_special_tokens=False)["input_ids"]
    assert greedy_agreement(target, [target], tokens, start=3) == [1.0]

    class Contrary(torch.nn.Module):  # predicts the target's least likely token everywhere
        def forward(self, ids):
            return -target(ids)

    assert greedy_agreement(target, [Contrary(), target], tokens, start=3) == [0.0, 1.0]
    with pytest.raises(ValueError, match="start"):
        greedy_agreement(target, [target], tokens, start=len(tokens))


def test_prompt_lookup_gives_transformers_own_prompt_lookup_tokens(target, smollm2):
    """transformers' prompt lookup decoding (``generate(prompt_lookup_num_tokens=4)``) and ours emit the
    same greedy tokens as plain decoding, and both need fewer target passes than tokens."""
    hf, tokenizer = smollm2
    prompt = tokenizer("def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):",
                       add_special_tokens=False)["input_ids"]
    passes = []
    hook = hf.register_forward_hook(lambda *_: passes.append(1))
    try:
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              max_new_tokens=24, min_new_tokens=24, do_sample=False, prompt_lookup_num_tokens=4)
    finally:
        hook.remove()
    theirs = out[0, len(prompt):].tolist()
    ours, stats = speculative_generate(target, prompt, 24, gamma=4)
    plain = target.generate_greedy(torch.tensor([prompt]), 24)[0, len(prompt):].tolist()
    assert theirs == ours == plain
    assert len(passes) < 24 and stats.target_passes + 1 < 24  # each counts the prompt's pass too
