"""IA3 and prompt tuning through peft: trainable counts computed from the shapes equal peft's, the
course's labelled log-probabilities equal peft's own loss (virtual tokens included), and the course's
trainer trains each method."""

import pytest
import torch
from finetune_helpers import tiny_llama

from course_utils.finetune.bookings import booking_messages, make_bookings
from course_utils.finetune.lora import ALL_LINEAR
from course_utils.finetune.peft_methods import METHODS, attach, expected_trainable, peft_config
from course_utils.finetune.sft import SFTConfig, collate, evaluate_loss, labelled_logprobs, tokenize_chat, train_sft

OPTIONS = {"lora q,v r=8": ("lora", {"r": 8, "alpha": 16, "targets": ("q_proj", "v_proj")}),
           "lora all-linear r=4": ("lora", {"r": 4, "alpha": 8, "targets": ALL_LINEAR}),
           "lora q,v r=8, top block": ("lora", {"r": 8, "alpha": 16, "targets": ("q_proj", "v_proj"), "layers": (1,)}),
           "ia3": ("ia3", {}),
           "prompt tuning, 12 tokens": ("prompt_tuning", {"num_virtual_tokens": 12})}


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return smollm2[1]


@pytest.fixture(scope="module")
def examples(tokenizer):
    return [tokenize_chat(tokenizer, booking_messages(b)) for b in make_bookings(8)]


@pytest.mark.parametrize("label", sorted(OPTIONS))
def test_the_computed_trainable_count_is_what_peft_reports(label, tokenizer):
    method, options = OPTIONS[label]
    base = tiny_llama(len(tokenizer))
    model = attach(base, method, **options)
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == expected_trainable(base.config, method, **options) > 0
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", ["ia3", "prompt_tuning"])
def test_labelled_logprobs_equal_peft_own_loss(method, examples, tokenizer):
    model = attach(tiny_llama(len(tokenizer), seed=1), method, num_virtual_tokens=12)
    with torch.no_grad():  # move the adapters off their identity start, so that they matter
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    batch = collate(examples[:3], tokenizer.pad_token_id)
    with torch.no_grad():
        ours = -labelled_logprobs(model, batch).sum() / (batch["labels"] != -100).sum()
        theirs = model(**batch).loss  # peft puts -100 labels under the virtual tokens itself
        with model.disable_adapter():
            plain = model(**batch).loss
    assert torch.allclose(ours, theirs, rtol=1e-5), (ours, theirs)
    assert abs(theirs - plain) > 1e-3  # the adapter changed the loss


@pytest.mark.parametrize("method, lr", [("ia3", 0.05), ("prompt_tuning", 0.05)])
def test_the_course_trainer_trains_ia3_and_prompt_tuning(method, lr, examples, tokenizer):
    model = attach(tiny_llama(len(tokenizer)), method, num_virtual_tokens=8)
    pad = tokenizer.pad_token_id
    before = evaluate_loss(model, examples, pad)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapter = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    train_sft(model, examples, SFTConfig(steps=15, batch_size=4, lr=lr, warmup_ratio=0.0), pad, progress=False)
    # a random tiny model predicts nearly uniformly, and a few hundred scales or embeddings can move
    # it only a little (the benchmark measures what they do on SmolLM2); the loss must still fall
    assert evaluate_loss(model, examples, pad) < before - 0.02
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert not any(torch.equal(p, adapter[n]) for n, p in model.named_parameters() if n in adapter)


def test_unknown_methods_and_incomplete_options_are_refused():
    with pytest.raises(ValueError, match="unknown method 'adapter'; choose from lora, ia3, prompt_tuning"):
        peft_config("adapter")
    with pytest.raises(ValueError, match="unknown method"):
        expected_trainable(None, "prefix")
    with pytest.raises(ValueError, match="needs tokenizer_name"):
        peft_config("prompt_tuning", init_text="Extract the booking")
    assert METHODS == ("lora", "ia3", "prompt_tuning")


def test_generation_from_a_prompt_tuned_model_follows_its_forward_pass(tokenizer):
    from course_utils.finetune.peft_methods import PromptTunedGenerator

    model = attach(tiny_llama(len(tokenizer), seed=2), "prompt_tuning", num_virtual_tokens=6)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 1.0)
    ids = torch.tensor([[5, 17, 42, 99, 7], [0, 0, 11, 23, 31]])  # the second row left-padded
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    out = PromptTunedGenerator(model).generate(ids, mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(out[:, :5], ids)
    for row in range(2):  # greedy decoding by hand, each row alone, through peft's own forward pass
        seq = ids[row][mask[row].bool()][None]
        for _ in range(6):
            with torch.no_grad():
                seq = torch.cat([seq, model(input_ids=seq).logits[:, -1:].argmax(-1)], 1)
        assert out[row, 5:].tolist() == seq[0, -6:].tolist()
    with pytest.raises(ValueError, match="needs a prompt-tuned peft model"):
        PromptTunedGenerator(attach(tiny_llama(len(tokenizer)), "ia3"))
