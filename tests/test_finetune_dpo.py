"""DPO: the loss on hand-computed cases, its gradient, and a training run that learns a preference."""

import math

import pytest
import torch
from finetune_helpers import tiny_llama

from course_utils.finetune import LoRAConfig, inject_lora, lora_disabled
from course_utils.finetune.concise import concise_pairs
from course_utils.finetune.dpo import DPOConfig, dpo_loss, preference_pair, train_dpo
from course_utils.finetune.sft import collate, labelled_logprobs


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_a_policy_equal_to_its_reference_has_loss_log_2_and_no_margin():
    out = dpo_loss(t(-5.0, -9.0), t(-7.0, -3.0), t(-5.0, -9.0), t(-7.0, -3.0), beta=0.5)
    assert out.loss.item() == pytest.approx(math.log(2))
    assert out.margins.tolist() == [0.0, 0.0] and out.accuracy == 0.0


def test_the_loss_and_rewards_on_a_hand_computed_pair():
    # the policy moved 1 nat towards the chosen answer and 1 nat away from the rejected one
    out = dpo_loss(t(-10.0), t(-12.0), t(-11.0), t(-11.0), beta=0.1)
    assert out.chosen_rewards.item() == pytest.approx(0.1) and out.rejected_rewards.item() == pytest.approx(-0.1)
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-0.2)))  # -log σ(0.2) = 0.598139
    assert out.loss.item() == pytest.approx(0.5981388693, abs=1e-9)
    assert out.accuracy == 1.0


def test_a_batch_averages_the_pairs_and_counts_the_right_ones():
    # margins +1 and -1 with beta 1
    out = dpo_loss(t(0.0, 0.0), t(-1.0, 1.0), t(0.0, 0.0), t(0.0, 0.0), beta=1.0)
    assert out.margins.tolist() == [1.0, -1.0]
    assert out.loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2)
    assert out.accuracy == 0.5


def test_the_gradient_pushes_the_chosen_answer_up_by_beta_sigma_of_minus_the_margin():
    chosen = t(-10.0).requires_grad_(True)
    rejected = t(-12.0).requires_grad_(True)
    dpo_loss(chosen, rejected, t(-11.0), t(-11.0), beta=0.1).loss.backward()
    weight = 0.1 / (1 + math.exp(0.2))  # β σ(-margin)
    assert chosen.grad.item() == pytest.approx(-weight) and rejected.grad.item() == pytest.approx(weight)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), beta=0)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(t(0.0, 1.0), t(0.0), t(0.0), t(0.0))


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return smollm2[1]


def test_training_learns_the_preference_against_the_adapters_off_reference(tokenizer):
    pairs = [preference_pair(tokenizer, prompt, chosen, rejected)
             for prompt, chosen, rejected in concise_pairs()[:8]]
    with pytest.raises(ValueError, match="identical"):
        preference_pair(tokenizer, concise_pairs()[0][0], "same", "same")
    model = tiny_llama(len(tokenizer))
    inject_lora(model, LoRAConfig(r=8, alpha=16, targets=("q_proj", "v_proj", "lm_head")))
    history = train_dpo(model, pairs, DPOConfig(steps=8, batch_size=4, lr=1e-2, beta=0.1),
                        tokenizer.pad_token_id, progress=False)
    assert history.loss[0] == pytest.approx(math.log(2), abs=1e-4)  # B = 0: the policy starts as the reference
    assert history.accuracy[-1] == 1.0 and history.margin[-1] > history.margin[0] + 0.5
    assert history.chosen_reward[-1] > history.rejected_reward[-1]
    # the rewards are measured against the base: with the adapters off the margin is zero again
    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], tokenizer.pad_token_id)
    with torch.no_grad():
        policy = labelled_logprobs(model, batch).view(2, -1)
        with lora_disabled(model):
            reference = labelled_logprobs(model, batch).view(2, -1)
    margins = 0.1 * ((policy[0] - reference[0]) - (policy[1] - reference[1]))
    assert (margins > 0).all()
