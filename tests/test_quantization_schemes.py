"""The scheme registry: every entry rebuilds what the format's own functions give, and misuse says what to do."""

import pytest
import torch

from course_utils.quantization.gguf_blocks import dequantize_gguf, quantize_gguf
from course_utils.quantization.gptq import rtn_quantize
from course_utils.quantization.integer import dequantize_int, quantize_int
from course_utils.quantization.nf4 import dequantize_nf4, quantize_nf4
from course_utils.quantization.schemes import SCHEMES, Scheme, get_scheme, register_scheme

WEIGHT = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)) * 0.05

# each scheme's round trip, written with the format's own functions (what notebook 05 used to spell out)
DIRECT = {
    "q8_0": lambda w: dequantize_gguf(quantize_gguf(w, "q8_0"), "q8_0"),
    "q4_0": lambda w: dequantize_gguf(quantize_gguf(w, "q4_0"), "q4_0"),
    "q4_1": lambda w: dequantize_gguf(quantize_gguf(w, "q4_1"), "q4_1"),
    "nf4": lambda w: dequantize_nf4(quantize_nf4(w)),
    "int8": lambda w: dequantize_int(quantize_int(w, 8, symmetric=True, granularity="channel")),
    "llm.int8": lambda w: dequantize_int(quantize_int(w, 8, symmetric=True, granularity="channel")),
    "rtn4-g128": lambda w: rtn_quantize(w, 4, 128).dequantize(),
}


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_round_trip_equals_the_formats_own_functions(name):
    rebuilt = get_scheme(name).round_trip(WEIGHT)
    assert rebuilt.shape == WEIGHT.shape and rebuilt.dtype == torch.float32
    assert torch.equal(rebuilt, DIRECT[name](WEIGHT).reshape(WEIGHT.shape))
    assert not torch.equal(rebuilt, WEIGHT)  # it really rounded


def test_only_gptq_and_awq_need_calibration_and_only_llm_int8_has_its_own_matmul():
    assert [name for name, s in SCHEMES.items() if s.needs_calibration] == ["gptq4-g128", "awq4-g128"]
    assert [name for name, s in SCHEMES.items() if s.matmul is not None] == ["llm.int8"]
    for name in ("gptq4-g128", "awq4-g128"):
        with pytest.raises(ValueError, match="needs calibration inputs: use quantize_model"):
            get_scheme(name).round_trip(WEIGHT)


@pytest.mark.parametrize("name", sorted(DIRECT))
@pytest.mark.parametrize("shape", [(256, 256), (64, 1024)])
def test_the_registered_bits_per_weight_are_what_a_layer_stores(name, shape):
    from torch import nn

    from course_utils.quantization.model import QuantizedLinear

    layer = QuantizedLinear.from_linear(nn.Linear(shape[1], shape[0], bias=False), name)
    assert 8 * layer.nbytes / (shape[0] * shape[1]) == pytest.approx(get_scheme(name).bits(*shape), abs=1e-9)


def test_unknown_names_list_the_registered_ones_and_names_are_registered_once():
    with pytest.raises(ValueError, match="unknown scheme 'q3_k'; choose from q8_0, q4_0"):
        get_scheme("q3_k")
    with pytest.raises(ValueError, match="already registered"):
        register_scheme(Scheme("q8_0", "again", load=lambda t, shape: t["w"], bits=lambda out, inp: 8))


def test_a_registered_scheme_is_usable_by_quantize_model(monkeypatch):
    from torch import nn

    from course_utils.quantization.model import QuantizedLinear

    half = Scheme("fp16", "float16 weights", load=lambda t, shape: t["w"].float(), bits=lambda out, inp: 16,
                  store=lambda w: {"w": w.half()})
    monkeypatch.setitem(SCHEMES, "fp16", half)
    layer = nn.Linear(256, 64, bias=False)
    layer.weight.data = WEIGHT.clone()
    quantized = QuantizedLinear.from_linear(layer, "fp16")
    assert quantized.nbytes == WEIGHT.numel() * 2
    x = torch.randn(3, 256)
    assert torch.allclose(quantized(x), x @ WEIGHT.half().float().T, atol=1e-6)
