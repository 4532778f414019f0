"""Supervised instruction tuning: chat-templated examples, loss on the assistant's tokens only.

An example is one conversation rendered by the model's own chat template. Only the tokens the
assistant wrote carry a label; the system prompt, the user's turns and the template's markers are
context the model reads but is never asked to produce (label ``-100``, which cross-entropy skips).

Training is AdamW with linear warm-up then cosine decay (``transformers``'
``get_cosine_schedule_with_warmup``) and gradient accumulation. With accumulation, the loss of a
step is the sum over *all* its labelled tokens divided by their number, so an accumulated step
gives the same gradient as one big batch even when micro-batches hold different numbers of
labelled tokens (averaging each micro-batch's mean instead would weight short answers up).

The trainer touches only parameters with ``requires_grad``, so it works for full fine-tuning, for
:mod:`course_utils.finetune.lora` and QLoRA, and for models wrapped by ``peft``.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

__all__ = [
    "IGNORE", "SFTConfig", "SFTExample", "SFTHistory", "accumulate_gradients", "collate", "evaluate_loss",
    "labelled_logprobs", "optimizer_and_schedule", "shuffled_batches", "tokenize_chat", "train_sft",
    "trainable_parameters",
]

IGNORE = -100  # the label cross-entropy skips

Messages = Sequence[dict[str, str]]


@dataclass(frozen=True)
class SFTExample:
    """input_ids (T,) and labels (T,): labels equal input_ids on assistant tokens, IGNORE elsewhere."""

    input_ids: torch.Tensor
    labels: torch.Tensor

    @property
    def n_labelled(self) -> int:
        return int((self.labels != IGNORE).sum())


def _template_ids(tokenizer, messages: Messages, generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=generation_prompt)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def tokenize_chat(tokenizer, messages: Messages) -> SFTExample:
    """Render ``messages`` with the tokenizer's chat template; label every assistant turn.

    An assistant turn's labels run from the end of the prompt that asks for it (the template's
    generation prompt) to the end of the turn, its end-of-turn token included, so the model also
    learns where to stop. Raises if the template renders a conversation's start differently from
    the conversation alone (then prefixes cannot locate the turns).
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("a training conversation must end with an assistant message")
    full = _template_ids(tokenizer, messages, generation_prompt=False)
    labels = [IGNORE] * len(full)
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        start = len(_template_ids(tokenizer, messages[:i], generation_prompt=True))
        upto = _template_ids(tokenizer, messages[:i + 1], generation_prompt=False)
        if full[:len(upto)] != upto:
            raise ValueError("the chat template does not render conversations prefix by prefix; "
                             "cannot tell which tokens are the assistant's")
        labels[start:len(upto)] = full[start:len(upto)]
    return SFTExample(torch.tensor(full), torch.tensor(labels))


def collate(examples: Sequence[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids, attention_mask and labels, each (B, T_max)."""
    length = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n], labels[row, :n], mask[row, :n] = e.input_ids, e.labels, 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _keeps_selected_logits(model) -> bool:
    """Whether ``model`` (or the model a peft wrapper holds) takes transformers' ``logits_to_keep``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def _virtual_tokens(model) -> int:
    """How many learned embeddings a peft prompt-learning model puts before the inputs (0 for other models)."""
    config = getattr(model, "active_peft_config", None)
    return config.num_virtual_tokens if config is not None and config.is_prompt_learning else 0


def labelled_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) each row's summed log-probability of its labelled tokens, each predicted from the tokens before it.

    Only positions that predict a labelled token need logits. Models of ``transformers`` compute
    just those (``logits_to_keep``): the output layer, 49,152 x 576 for SmolLM2, is then applied
    to a quarter of the positions of a typical example instead of all of them. A prompt-tuned
    peft model's outputs start with its virtual tokens; those positions are skipped.
    """
    device = next(model.parameters()).device
    targets = batch["labels"][:, 1:].to(device)  # the token at t+1 is predicted at t
    keep = torch.nonzero((targets != IGNORE).any(0)).flatten()  # positions some row needs
    inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
    at = keep + _virtual_tokens(model)
    if _keeps_selected_logits(model):
        logits = model(**inputs, logits_to_keep=at).logits  # (B, len(keep), V)
    else:
        logits = model(**inputs).logits[:, at]
    targets = targets[:, keep]
    token_nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                ignore_index=IGNORE, reduction="none")  # 0 where ignored
    return -token_nll.view(targets.shape).sum(1)


@torch.no_grad()
def evaluate_loss(model, examples: Sequence[SFTExample], pad_id: int, batch_size: int = 8) -> float:
    """Mean cross-entropy per labelled token over ``examples`` (the model is left in eval mode)."""
    model.eval()
    total = -sum(float(labelled_logprobs(model, collate(examples[i:i + batch_size], pad_id)).sum())
                 for i in range(0, len(examples), batch_size))
    return total / sum(e.n_labelled for e in examples)


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 30
    batch_size: int = 4  # examples per micro-batch
    accumulation: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 0  # 0: evaluate at the end only
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "accumulation"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class SFTHistory:
    train_loss: list[float] = field(default_factory=list)  # per optimizer step, per labelled token
    lr: list[float] = field(default_factory=list)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    seconds: float = 0.0


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    """The parameters with ``requires_grad``; raises if there are none."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the model has no trainable parameters: inject LoRA adapters or unfreeze some weights")
    return parameters


def optimizer_and_schedule(parameters: list[torch.nn.Parameter], lr: float, steps: int, warmup_ratio: float,
                           weight_decay: float = 0.0):
    """AdamW and a schedule warming up linearly over ``warmup_ratio`` of ``steps``, then cosine decay to 0."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * steps), steps)


def shuffled_batches(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Index batches of ``batch_size`` over ``n`` items in a seeded random order, epoch after epoch."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while True:
        while len(order) < batch_size:
            order += torch.randperm(n, generator=generator).tolist()
        yield order[:batch_size]
        del order[:batch_size]


def accumulate_gradients(model, micro_batches: Sequence[Sequence[SFTExample]], pad_id: int) -> float:
    """Backpropagate the loss per labelled token over all ``micro_batches`` together; returns it.

    Each micro-batch's summed loss is divided by the labelled tokens of *all* of them, so the
    gradients add up to those of one batch holding every example.
    """
    labelled = sum(e.n_labelled for batch in micro_batches for e in batch)
    total = 0.0
    for batch in micro_batches:
        loss = -labelled_logprobs(model, collate(batch, pad_id)).sum() / labelled
        loss.backward()
        total += loss.item()
    return total


def train_sft(model, train: Sequence[SFTExample], config: SFTConfig, pad_id: int,
              held_out: Sequence[SFTExample] = (), progress: bool = True) -> SFTHistory:
    """Fine-tune the trainable parameters of ``model`` on ``train``; returns the loss history.

    Examples are drawn in a seeded random order, epoch after epoch, ``batch_size`` per
    micro-batch and ``accumulation`` micro-batches per step. ``held_out`` is scored every
    ``eval_every`` steps and at the end. The model is left in eval mode.
    """
    if not train:
        raise ValueError("no training examples")
    if any(e.n_labelled == 0 for e in train):
        raise ValueError("an example has no labelled tokens: does each conversation end with an assistant turn?")
    parameters = trainable_parameters(model)
    optimizer, schedule = optimizer_and_schedule(parameters, config.lr, config.steps, config.warmup_ratio,
                                                 config.weight_decay)
    batches = shuffled_batches(len(train), config.batch_size, config.seed)
    history = SFTHistory()
    start = time.perf_counter()
    for step in tqdm(range(config.steps), desc="fine-tuning", disable=not progress):
        model.train()
        micro_batches = [[train[i] for i in next(batches)] for _ in range(config.accumulation)]
        total = accumulate_gradients(model, micro_batches, pad_id)
        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        history.lr.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        history.train_loss.append(total)
        last = step + 1 == config.steps
        if held_out and (last or (config.eval_every and (step + 1) % config.eval_every == 0)):
            history.eval_loss.append((step + 1, evaluate_loss(model, held_out, pad_id)))
    model.eval()
    history.seconds = time.perf_counter() - start
    return history
