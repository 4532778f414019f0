"""measure_schemes: the one loop behind notebook 05's table and the quantization benchmark."""

import copy
import math

import pytest
import torch

from course_utils.architecture.transformer import Llama, LlamaConfig
from course_utils.evaluation import perplexity
from course_utils.quantization.measuring import BASELINE, measure_schemes
from course_utils.quantization.model import model_bytes, quantize_model

CONFIG = LlamaConfig(vocab_size=64, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=256)


def _setup():
    torch.manual_seed(0)
    model = Llama(CONFIG)
    model.init_weights()
    gen = torch.Generator().manual_seed(1)
    texts = [torch.randint(0, 64, (20,), generator=gen) for _ in range(3)]
    return model.eval(), texts, torch.randint(0, 64, (2, 32), generator=gen)


def test_rows_measure_each_scheme_against_the_untouched_baseline():
    model, texts, calibration = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = measure_schemes(model, texts, calibration, schemes=["q8_0", "q4_0", "gptq4-g128"], progress=False)
    assert [r["scheme"] for r in rows] == [BASELINE, "q8_0", "q4_0", "gptq4-g128"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is not modified
    base = rows[0]
    assert base["perplexity"] == pytest.approx(perplexity(model, texts)) and base["increase"] == 0
    assert base["linear_bits_per_weight"] == 32 and base["model_mb"] == model_bytes(model) / 1e6
    by = {r["scheme"]: r for r in rows}
    assert by["q8_0"]["linear_bits_per_weight"] == pytest.approx(8.5)
    assert by["q4_0"]["linear_bits_per_weight"] == pytest.approx(4.5)
    for r in rows[1:]:
        assert r["increase"] == pytest.approx(r["perplexity"] / base["perplexity"] - 1)
        assert r["model_mb"] < base["model_mb"] and r["quantize_s"] >= 0
    by_hand = quantize_model(copy.deepcopy(model), "q4_0")
    assert by["q4_0"]["perplexity"] == pytest.approx(perplexity(by_hand, texts))
    # one mean NLL per passage, each that passage's own log-perplexity
    assert by["q4_0"]["passage_nll"] == pytest.approx([math.log(perplexity(by_hand, [t])) for t in texts])
    assert by["q4_0"]["perplexity"] != base["perplexity"]


def test_misuse_fails_before_any_work():
    model, texts, _ = _setup()
    with pytest.raises(ValueError, match="unknown scheme 'q2'"):
        measure_schemes(model, texts, schemes=["q8_0", "q2"], progress=False)
    with pytest.raises(ValueError, match="GPTQ needs calibration ids"):
        measure_schemes(model, texts, schemes=["gptq4-g128"], progress=False)
