"""The scaling chapter's trainer: real corpus, fixed split, exact accounting, repeatable."""

import math

import pytest

from course_utils.scaling.training import (
    Corpus,
    TrainConfig,
    model_ladder,
    stdlib_corpus,
    stdlib_files,
    train,
    train_many,
)

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


def test_split_is_by_whole_file():
    files = stdlib_files(max_bytes=2_000_000)
    held = {f.path for f in files if f.held_out}
    assert 0 < len(held) < len(files) and len({f.path for f in files}) == len(files)
    corpus = stdlib_corpus(max_bytes=2_000_000)
    assert len(corpus.held_out) == sum(len(f.text) for f in files if f.held_out)


def test_parameter_count_and_budget_arithmetic():
    for cfg in model_ladder([8, 16, 24], tokens=4096):
        assert train(cfg.with_budget(6 * cfg.n_params * 600), stdlib_corpus(max_bytes=2_000_000),
                     progress=False).n_params == cfg.n_params  # train() checks the count against the model
        assert cfg.with_budget(6 * cfg.n_params * 5000).tokens == 5000
    assert [c.n_heads for c in model_ladder([24, 8, 16])] == [1, 2, 3]


def test_parallel_runs_equal_serial_runs(corpus):
    configs = [TrainConfig(**{**SMALL, "seed": s}) for s in (0, 1)]
    serial = train_many(configs, corpus, workers=1, progress=False)
    parallel = train_many(configs, corpus, workers=2, progress=False)
    assert [r.held_out_loss for r in serial] == [r.held_out_loss for r in parallel]
    assert [r.history for r in serial] == [r.history for r in parallel]
    assert serial[0].held_out_loss != serial[1].held_out_loss  # the seed matters
    assert serial[0].model is not None and not serial[0].model.training


def test_a_corpus_from_text_trains():
    text = b"abcabcabc" * 2000
    result = train(TrainConfig(**{**SMALL, "tokens": 256 * 200}), Corpus.from_bytes(text, text[:3000]), progress=False)
    assert result.held_out_loss < 0.5  # a period-3 pattern is learned almost perfectly
    with pytest.raises(ValueError, match="at least 2 bytes"):
        Corpus.from_bytes(b"", b"abc")


def test_bad_config_is_explained(corpus):
    with pytest.raises(ValueError, match="at least one batch"):
        train(TrainConfig(**{**SMALL, "tokens": 10}), corpus, progress=False)
    with pytest.raises(ValueError, match="warmup_fraction"):
        train(TrainConfig(**{**SMALL, "warmup_fraction": 1.0}), corpus, progress=False)
    with pytest.raises(ValueError, match="workers"):
        train_many([TrainConfig(**SMALL)], corpus, workers=0)
