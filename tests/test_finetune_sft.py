"""Instruction tuning: labels on assistant tokens only, token-weighted gradient accumulation, the
loss against transformers' own, the schedule, and training with our LoRA and with peft."""

import peft
import pytest
import torch
from finetune_helpers import tiny_llama

from course_utils.finetune import LoRAConfig, inject_lora
from course_utils.finetune.bookings import booking_messages, make_bookings
from course_utils.finetune.sft import (
    IGNORE,
    SFTConfig,
    accumulate_gradients,
    collate,
    evaluate_loss,
    labelled_logprobs,
    tokenize_chat,
    train_sft,
)


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return smollm2[1]


@pytest.fixture(scope="module")
def examples(tokenizer):
    return [tokenize_chat(tokenizer, booking_messages(b)) for b in make_bookings(12)]


def test_only_the_assistant_turns_carry_labels(tokenizer):
    chat = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi there."},
            {"role": "user", "content": "Again, louder."}, {"role": "assistant", "content": "HI THERE!"}]
    example = tokenize_chat(tokenizer, chat)
    assert torch.equal(example.labels[example.labels != IGNORE], example.input_ids[example.labels != IGNORE])
    labelled = tokenizer.decode(example.input_ids[example.labels != IGNORE])
    assert labelled == "Hi there.<|im_end|>\nHI THERE!<|im_end|>\n"  # both answers, each with its end of turn
    assert "Say hi" not in labelled and "louder" not in labelled and "system" not in labelled
    with pytest.raises(ValueError, match="end with an assistant"):
        tokenize_chat(tokenizer, chat[:3])


def test_collate_pads_on_the_right_without_labels(examples, tokenizer):
    batch = collate(examples[:3], tokenizer.pad_token_id)
    lengths = [len(e.input_ids) for e in examples[:3]]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


def test_the_loss_per_labelled_token_equals_transformers_loss(examples, tokenizer):
    model = tiny_llama(len(tokenizer))
    ours = evaluate_loss(model, examples[:1], tokenizer.pad_token_id)
    with torch.no_grad():
        theirs = model(input_ids=examples[0].input_ids[None], labels=examples[0].labels[None]).loss.item()
    assert ours == pytest.approx(theirs, rel=1e-5)


def _gradients(model) -> torch.Tensor:
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return grads


def test_accumulated_micro_batches_give_the_gradient_of_one_big_batch(examples, tokenizer):
    model = tiny_llama(len(tokenizer))
    inject_lora(model, LoRAConfig(r=4, alpha=8))
    pad = tokenizer.pad_token_id
    # examples of different lengths, so the micro-batches hold different numbers of labelled tokens
    batch = sorted(examples[:4], key=lambda e: e.n_labelled)
    assert batch[0].n_labelled != batch[-1].n_labelled
    accumulate_gradients(model, [batch], pad)
    whole = _gradients(model)
    accumulate_gradients(model, [batch[:1], batch[1:]], pad)
    assert torch.allclose(_gradients(model), whole, atol=1e-7)
    # averaging each micro-batch's own mean (the common mistake) gives another gradient
    for part in (batch[:1], batch[1:]):
        (-labelled_logprobs(model, collate(part, pad)).sum() / sum(e.n_labelled for e in part) / 2).backward()
    assert not torch.allclose(_gradients(model), whole, atol=1e-5)


def test_training_lowers_the_loss_with_warmup_then_cosine_decay(examples, tokenizer):
    model = tiny_llama(len(tokenizer))
    inject_lora(model, LoRAConfig(r=8, alpha=16, targets=("q_proj", "v_proj", "lm_head")))
    pad = tokenizer.pad_token_id
    before = evaluate_loss(model, examples[:8], pad)
    history = train_sft(model, examples[:8], SFTConfig(steps=20, batch_size=4, lr=1e-2, warmup_ratio=0.1,
                                                       eval_every=10), pad, held_out=examples[:8], progress=False)
    assert len(history.train_loss) == 20 and [s for s, _ in history.eval_loss] == [10, 20]
    assert history.eval_loss[-1][1] < before - 0.5
    peak = history.lr.index(max(history.lr))
    assert history.lr[0] < history.lr[peak] and peak <= 2 and history.lr[-1] < 0.05 * max(history.lr)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_sft(tiny_llama(len(tokenizer)).requires_grad_(False), examples, SFTConfig(steps=1), pad)


def test_the_trainer_also_trains_a_peft_model(examples, tokenizer):
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "lm_head"])
    model = peft.get_peft_model(tiny_llama(len(tokenizer)), config)
    pad = tokenizer.pad_token_id
    before = evaluate_loss(model, examples[:8], pad)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    train_sft(model, examples[:8], SFTConfig(steps=10, batch_size=4, lr=1e-2), pad, progress=False)
    assert evaluate_loss(model, examples[:8], pad) < before - 0.5
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
