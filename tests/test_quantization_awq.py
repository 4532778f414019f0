"""AWQ: folding the factors changes nothing by itself, the search only keeps factors that help, and
on a layer whose inputs have salient channels it beats round-to-nearest by a wide margin."""

import pytest
import torch
from torch import nn

from course_utils.architecture.transformer import Llama, LlamaConfig
from course_utils.quantization.awq import GRID, activation_magnitude, awq_weight, fold_scales, search_scales
from course_utils.quantization.calibrated import _awq_groups
from course_utils.quantization.gptq import rtn_quantize
from course_utils.quantization.model import QuantizedLinear, quantize_model


def _model(n_kv_heads: int, seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    model = Llama(LlamaConfig(vocab_size=64, dim=128, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, ffn_dim=256))
    model.init_weights()
    return model


def _ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(seed))


SALIENT = (3, 50, 130, 201)


def _salient_inputs(n: int = 2048, channels: int = 256, seed: int = 0) -> torch.Tensor:
    """(n, channels) activations in which 4 channels are about 30x larger than the rest."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, generator=g)
    x[:, list(SALIENT)] *= 30
    return x


@pytest.mark.parametrize("n_kv_heads", [4, 2], ids=["multi-head (v -> o folded too)", "grouped-query"])
def test_folding_the_factors_alone_leaves_the_model_unchanged(n_kv_heads):
    model = _model(n_kv_heads)
    ids = _ids()
    with torch.no_grad():
        reference = model(ids)
        g = torch.Generator().manual_seed(2)
        folded = 0
        for block in model.layers:
            for previous, layers in _awq_groups(block):
                fold_scales(previous, layers, torch.rand(layers[0].in_features, generator=g) * 3 + 0.2)
                folded += 1
        logits = model(ids)
    assert folded == 2 * (4 if n_kv_heads == 4 else 3)
    assert not torch.equal(model.layers[0].input_layernorm.weight, torch.ones(128))  # the weights did change
    assert torch.allclose(logits, reference, rtol=1e-4, atol=1e-4), (logits - reference).abs().max()


def test_folding_refuses_an_operation_it_cannot_scale():
    with pytest.raises(TypeError, match="cannot fold scales into ReLU"):
        fold_scales(nn.ReLU(), [nn.Linear(8, 4)], torch.ones(8))


def test_alpha_zero_is_round_to_nearest_and_the_search_never_does_worse_on_its_data():
    w = torch.randn(96, 256, generator=torch.Generator().manual_seed(3)) * 0.05
    x = _salient_inputs()
    search = search_scales(w, x, 4, 128, tokens=len(x))
    rtn_error = float((x @ (w - rtn_quantize(w, 4, 128).dequantize()).T).pow(2).mean())
    assert search.alphas[0] == 0 and len(search.errors) == GRID
    assert search.rtn_error == pytest.approx(rtn_error, rel=1e-5)
    assert search.error == min(search.errors) <= search.rtn_error
    chosen = float((x @ (w - awq_weight(w, search.scales)).T).pow(2).mean())
    assert chosen == pytest.approx(search.error, rel=1e-5)  # the factors returned are the ones measured


def test_with_salient_input_channels_awq_cuts_the_output_error_well_below_rtn():
    w = torch.randn(96, 256, generator=torch.Generator().manual_seed(4)) * 0.05
    search = search_scales(w, _salient_inputs(seed=1))
    held_out = _salient_inputs(seed=2)  # other tokens from the same distribution
    rtn = float((held_out @ (w - rtn_quantize(w, 4, 128).dequantize()).T).pow(2).mean())
    awq = float((held_out @ (w - awq_weight(w, search.scales)).T).pow(2).mean())
    assert search.alpha > 0
    assert awq < 0.5 * rtn, (awq, rtn)
    salient = set(activation_magnitude(held_out).topk(4).indices.tolist())
    assert set(search.scales.topk(4).indices.tolist()) == salient == set(SALIENT)  # the largest factors


def test_inputs_of_the_wrong_width_are_refused():
    with pytest.raises(ValueError, match="inputs have 8 channels, the weight reads 256"):
        search_scales(torch.zeros(4, 256), torch.zeros(10, 8))


def _with_salient_channels(model: Llama) -> Llama:
    """Large activations on a few hidden dimensions at every layer input, as trained LLMs have them."""
    with torch.no_grad():
        for block in model.layers:
            for norm in (block.input_layernorm, block.post_attention_layernorm):
                norm.weight[list(SALIENT[:2])] *= 20
    return model


def test_awq_model_stores_4_bit_groups_and_beats_rtn_where_activations_have_salient_channels():
    ids = _ids(5)
    errors = {}
    for scheme in ("rtn4-g128", "awq4-g128"):
        model = _with_salient_channels(_model(2, seed=6))
        with torch.no_grad():
            reference = model(ids)
            quantize_model(model, scheme, calibration=ids)
            errors[scheme] = float((model(ids) - reference).pow(2).mean())
        layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
        assert len(layers) == 14 and {m.scheme for m in layers} == {scheme}
    assert errors["awq4-g128"] < 0.7 * errors["rtn4-g128"], errors
