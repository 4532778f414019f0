"""quantize_model: layers really stored quantized, computing with what they store."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.architecture.transformer import Llama, LlamaConfig
from course_utils.quantization.model import QuantizedLinear, dequantize_model, model_bytes, quantize_model
from course_utils.quantization.schemes import SCHEMES

CONFIG = LlamaConfig(vocab_size=64, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=256)
# bytes per (out x in) weight for the stored buffers of each scheme, on CONFIG's shapes
EXPECTED_BITS = {"q8_0": 8.5, "q4_0": 4.5, "q4_1": 5.0}


def _model(seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    model = Llama(CONFIG)
    model.init_weights()
    return model


def _ids() -> torch.Tensor:
    return torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_every_linear_but_the_head_is_replaced_and_the_logits_stay_close(scheme):
    model = _model()
    ids = _ids()
    with torch.no_grad():
        reference = model(ids)
        float_bytes = model_bytes(model)
        quantize_model(model, scheme, calibration=_ids() if SCHEMES[scheme].needs_calibration else None)
        logits = model(ids)
    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, QuantizedLinear))]
    assert sum(isinstance(m, QuantizedLinear) for m in linears) == 7 * CONFIG.n_layers
    assert isinstance(model.lm_head, nn.Linear)
    assert model_bytes(model) < float_bytes
    relative = (logits - reference).norm() / reference.norm()
    assert relative < (0.02 if scheme in ("q8_0", "int8", "llm.int8") else 0.25), relative


@pytest.mark.parametrize("scheme", ["q8_0", "q4_0", "q4_1"])
def test_gguf_layers_store_exactly_their_block_bytes(scheme):
    layer = nn.Linear(128, 96, bias=False)
    quantized = QuantizedLinear.from_linear(layer, scheme)
    assert quantized.nbytes == 96 * 128 * EXPECTED_BITS[scheme] / 8
    assert not any(p.numel() for p in quantized.parameters())  # no float copy of the weight hides anywhere


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "llm.int8" and not SCHEMES[s].needs_calibration])
def test_the_forward_pass_computes_with_the_stored_weight_and_dequantize_model_gives_it_back(scheme):
    model = _model(2)
    ids = _ids()
    with torch.no_grad():
        quantize_model(model, scheme)
        quantized_logits = model(ids)
        layer = model.layers[0].mlp.down_proj
        x = torch.randn(3, CONFIG.ffn_dim)
        assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.dequantized_weight()))
        dequantize_model(model)
        assert not any(isinstance(m, QuantizedLinear) for m in model.modules())
        assert torch.allclose(model(ids), quantized_logits, atol=1e-5)


def test_llm_int8_layers_multiply_in_int8():
    model = _model(3)
    quantize_model(model, "llm.int8")
    layer = model.layers[0].self_attn.q_proj
    x = torch.randn(4, CONFIG.dim)
    x[:, 3] = 20.0  # an outlier feature takes the float path
    dequantized = torch.nn.functional.linear(x, layer.dequantized_weight())
    out = layer(x)
    assert not torch.equal(out, dequantized) and torch.allclose(out, dequantized, rtol=0.05, atol=0.05)


def test_wrong_use_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="unknown scheme"):
        quantize_model(_model(), "q3_k")
    for scheme in ("gptq4-g128", "awq4-g128"):
        with pytest.raises(ValueError, match=f"{scheme} needs calibration token ids"):
            quantize_model(_model(), scheme)
        with pytest.raises(TypeError, match="course Llama"):
            quantize_model(nn.Sequential(nn.Linear(8, 8)), scheme, calibration=_ids())


@pytest.mark.parametrize("scheme", ["nf4", "q4_0"])
def test_training_through_a_quantized_layer_keeps_no_float_weight_for_backward(scheme):
    torch.manual_seed(0)
    layer = QuantizedLinear.from_linear(nn.Linear(128, 64), scheme)

    def forward_saving(function):
        """function's output for an input that needs a gradient, and the sizes of the tensors autograd saved."""
        x = torch.randn(5, 128, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            out = function(x)
        out.pow(2).sum().backward()
        return x.grad, saved

    grad, saved = forward_saving(layer)
    plain_grad, plain_saved = forward_saving(lambda x: F.linear(x, layer.dequantized_weight(), layer.bias))
    assert torch.allclose(grad, plain_grad, atol=1e-5)
    assert max(plain_saved) == 128 * 64  # F.linear keeps the float weight for the input's gradient ...
    assert max(saved, default=0) < 128 * 64  # ... the quantized layer rebuilds it in backward instead
