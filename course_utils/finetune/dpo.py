"""Direct Preference Optimization (Rafailov et al., 2023).

Given a prompt, a *chosen* answer y_w and a *rejected* one y_l, DPO trains the policy π directly,
with no reward model, on

    loss = -log σ( β·[log π(y_w) - log π_ref(y_w)] - β·[log π(y_l) - log π_ref(y_l)] )

where π_ref is a frozen copy of the starting model and log π(y) sums the log-probabilities of
the answer's tokens given the prompt. The bracketed terms, times β, are the *implicit rewards*
of the two answers; their difference is the *reward margin*, and the share of pairs with a
positive margin is the *preference accuracy*. β sets how far the policy may move from the
reference: a small β lets it move further for the same loss.

The reference never changes, so its log-probabilities are computed once, before training. With
LoRA the reference is the same model with its adapters switched off
(:func:`~course_utils.finetune.lora.lora_disabled`): no second copy of the weights in memory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from course_utils.finetune.lora import lora_disabled, lora_layers
from course_utils.finetune.sft import (
    SFTExample,
    collate,
    labelled_logprobs,
    optimizer_and_schedule,
    shuffled_batches,
    tokenize_chat,
    trainable_parameters,
)

__all__ = ["DPOConfig", "DPOHistory", "DPOLoss", "PreferencePair", "dpo_loss", "preference_pair", "train_dpo"]


@dataclass(frozen=True)
class DPOLoss:
    """The mean loss and, per pair (B,), the implicit rewards of both answers."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> float:
        """Share of pairs whose chosen answer has the higher implicit reward."""
        return float((self.margins > 0).float().mean())


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float = 0.1) -> DPOLoss:
    """DPO's loss from the summed answer log-probabilities (each (B,)) under the policy and the reference."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, reference_chosen, reference_rejected)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must have one shape (B,), got {sorted(shapes)}")
    chosen = beta * (policy_chosen - reference_chosen)
    rejected = beta * (policy_rejected - reference_rejected)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return DPOLoss(loss, chosen.detach(), rejected.detach())


@dataclass(frozen=True)
class PreferencePair:
    """The same prompt answered twice, each tokenized with labels on its answer only."""

    chosen: SFTExample
    rejected: SFTExample


def preference_pair(tokenizer, prompt: list[dict[str, str]], chosen: str, rejected: str) -> PreferencePair:
    """Tokenize ``prompt`` (chat messages ending with the user's turn) with each answer."""
    if chosen == rejected:
        raise ValueError("the chosen and rejected answers are identical: the pair carries no preference")
    return PreferencePair(*(tokenize_chat(tokenizer, [*prompt, {"role": "assistant", "content": answer}])
                            for answer in (chosen, rejected)))


@dataclass(frozen=True)
class DPOConfig:
    steps: int = 30
    batch_size: int = 4  # pairs per step
    lr: float = 5e-4
    beta: float = 0.1
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps} and {self.batch_size}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, got {self.beta}")


@dataclass
class DPOHistory:
    """Per step: the loss, the mean reward margin, the preference accuracy and both mean rewards."""

    loss: list[float] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    chosen_reward: list[float] = field(default_factory=list)
    rejected_reward: list[float] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def _reference_logprobs(model, reference, pairs: Sequence[PreferencePair], pad_id: int,
                        batch_size: int) -> torch.Tensor:
    """(n, 2): the reference's log-probabilities of each pair's chosen and rejected answer."""
    def score(scorer) -> torch.Tensor:
        scorer.eval()
        rows = []
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            batch = collate([p.chosen for p in chunk] + [p.rejected for p in chunk], pad_id)
            rows.append(labelled_logprobs(scorer, batch).view(2, -1).T.cpu())
        return torch.cat(rows)

    if reference is not None:
        return score(reference)
    if not lora_layers(model):
        raise ValueError("without LoRA adapters to switch off, pass the frozen reference model explicitly")
    with lora_disabled(model):
        return score(model)


def train_dpo(model, pairs: Sequence[PreferencePair], config: DPOConfig, pad_id: int, reference=None,
              progress: bool = True) -> DPOHistory:
    """Train the trainable parameters of ``model`` with DPO on ``pairs``; returns the history.

    ``reference``: the frozen starting model; by default ``model`` with its LoRA adapters off.
    The model is left in eval mode.
    """
    if not pairs:
        raise ValueError("no preference pairs")
    parameters = trainable_parameters(model)
    reference_logps = _reference_logprobs(model, reference, pairs, pad_id, config.batch_size)
    optimizer, schedule = optimizer_and_schedule(parameters, config.lr, config.steps, config.warmup_ratio)
    batches = shuffled_batches(len(pairs), config.batch_size, config.seed)
    history = DPOHistory()
    start = time.perf_counter()
    for _ in tqdm(range(config.steps), desc="DPO", disable=not progress):
        model.train()
        index = next(batches)
        batch = collate([pairs[i].chosen for i in index] + [pairs[i].rejected for i in index], pad_id)
        policy = labelled_logprobs(model, batch).view(2, -1)
        reference_batch = reference_logps[index].to(policy.device)
        result = dpo_loss(policy[0], policy[1], reference_batch[:, 0], reference_batch[:, 1], config.beta)
        result.loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        history.loss.append(result.loss.item())
        history.margin.append(float(result.margins.mean()))
        history.accuracy.append(result.accuracy)
        history.chosen_reward.append(float(result.chosen_rewards.mean()))
        history.rejected_reward.append(float(result.rejected_rewards.mean()))
    model.eval()
    history.seconds = time.perf_counter() - start
    return history
