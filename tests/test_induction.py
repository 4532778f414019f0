"""The copying task and the two measurements of chapter 3's in-context-learning experiment."""

import math

import pytest
import torch

from course_utils.architecture.transformer import Llama
from course_utils.icl.induction import (
    ALPHABET,
    episodes,
    in_context_score,
    induction_scores,
    learned_rule,
    probe_batch,
)
from course_utils.scaling.training import TrainConfig, train


def test_episodes_repeat_a_random_string_of_the_drawn_length():
    batch = probe_batch(half=10, n=8)
    assert batch.shape == (8, 20) and torch.equal(batch[:, :10], batch[:, 10:])
    assert set(bytes(batch.flatten().tolist()).decode()) <= set(ALPHABET)
    text = episodes(50, (3, 6), seed=0).decode()
    assert len(text) % 2 == 0 and 300 <= len(text) <= 600
    with pytest.raises(ValueError, match="lengths"):
        episodes(5, (6, 3), seed=0)


class _CopyOracle(torch.nn.Module):
    """Uniform over 256 bytes in the first copy; certain of the right symbol in the second."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, 256)
        half = (ids.shape[1] + 1) // 2
        logits = torch.zeros(*ids.shape, 256)
        for t in range(half - 1, ids.shape[1]):
            logits[torch.arange(ids.shape[0]), t, ids[:, t - half + 1]] = 50.0
        return logits


def test_in_context_score_of_a_perfect_copier():
    batch = probe_batch(half=12, n=4)
    assert in_context_score(_CopyOracle(), batch) == pytest.approx(-math.log(256), abs=1e-3)


class _FixedDistanceCopier(torch.nn.Module):
    """Predicts the symbol ``distance`` places back: right on episodes of that length only."""

    def __init__(self, distance: int):
        super().__init__()
        self.distance = distance

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, 256)
        for t in range(self.distance - 1, ids.shape[1]):
            logits[torch.arange(ids.shape[0]), t, ids[:, t - self.distance + 1]] = 50.0
        return logits


def test_the_learned_rule_tells_a_positional_copier_from_a_content_matcher():
    long, short = probe_batch(half=16, n=8), probe_batch(half=12, n=8)
    positional = {"score": in_context_score(_FixedDistanceCopier(16), long),
                  "other length": in_context_score(_FixedDistanceCopier(16), short), "induction": 1.0}
    content = {"score": in_context_score(_CopyOracle(), long), "other length": in_context_score(_CopyOracle(), short)}
    assert learned_rule(positional) == "positional"
    assert learned_rule({**content, "induction": 0.9}) == "induction head"
    assert learned_rule({**content, "induction": 0.1}) == "context statistics"  # keeps the gain, looks elsewhere
    assert learned_rule({"score": -0.3, "other length": -0.2, "induction": 0.9}) == "not copying yet"


class _InductionAttention:
    def __init__(self, half: int):
        self.half = half

    def attention_weights(self, ids: torch.Tensor, layer: int) -> torch.Tensor:  # (B, H, T, T)
        b, t = ids.shape
        weights = torch.zeros(b, 2, t, t)
        weights[:, :, :, 0] = 1.0  # both heads park on the first token...
        for q in range(self.half, t):
            weights[:, 0, q] = 0.0
            weights[:, 0, q, q - self.half + 1] = 1.0  # ...except head 0, which copies
        return weights


def test_induction_score_finds_the_copying_head():
    scores = induction_scores(_InductionAttention(8), probe_batch(half=8, n=2), layer=0)
    assert scores.tolist() == [1.0, 0.0]


def test_training_on_episodes_with_a_probe_records_the_score():
    from course_utils.scaling.training import Corpus

    corpus = Corpus.from_bytes(episodes(400, (6, 10), 1), episodes(40, (6, 10), 2))
    batch = probe_batch(half=8, n=8)
    cfg = TrainConfig(dim=16, n_layers=2, n_heads=2, n_kv_heads=2, seq_len=32, batch_size=4, tokens=128 * 20)
    result = train(cfg, corpus, progress=False, probe=lambda m: {"score": in_context_score(m, batch)}, probe_points=4)
    assert [tokens for tokens, _ in result.probes] == [0, 640, 1280, 1920, 2560]
    assert all(isinstance(p["score"], float) for _, p in result.probes)
    assert induction_scores(Llama(cfg.model_config()), batch, layer=1).shape == (2,)
