"""The scaling chapter's trainer: real corpus, fixed split, exact accounting, repeatable."""

import math

import pytest

from course_utils.training import TrainConfig, stdlib_corpus, train

SMALL = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, seq_len=32, batch_size=8, tokens=256 * 30,
             eval_tokens=2048)


@pytest.fixture(scope="module")
def corpus():
    return stdlib_corpus(max_bytes=2_000_000)


def test_corpus_is_real_python_with_a_disjoint_held_out_split(corpus):
    assert len(corpus.train) > 1_000_000 and len(corpus.held_out) > 10_000
    assert b"def " in bytes(corpus.train[:200_000].tolist())
    assert stdlib_corpus(max_bytes=2_000_000) is corpus  # cached, and the split is fixed


def test_training_is_deterministic_and_accounts_tokens_and_flops(corpus):
    a = train(TrainConfig(**SMALL), corpus, progress=False)
    b = train(TrainConfig(**SMALL), corpus, progress=False)
    assert a.history == b.history and a.held_out_loss == b.held_out_loss
    assert a.tokens_seen == 30 * 8 * 32
    assert a.flops == 6 * a.n_params * a.tokens_seen


def test_a_fresh_model_starts_near_uniform_and_learns(corpus):
    result = train(TrainConfig(**{**SMALL, "tokens": 256 * 120}), corpus, progress=False)
    first, last = result.history[0][1], result.history[-1][1]
    assert abs(first - math.log(256)) < 0.5  # initial loss of a uniform guess over 256 bytes
    assert last < first - 1.0 and result.held_out_loss < math.log(256) - 1.0


def test_bad_config_is_explained(corpus):
    with pytest.raises(ValueError, match="at least one batch"):
        train(TrainConfig(**{**SMALL, "tokens": 10}), corpus, progress=False)
    with pytest.raises(ValueError, match="warmup_fraction"):
        train(TrainConfig(**{**SMALL, "warmup_fraction": 1.0}), corpus, progress=False)
