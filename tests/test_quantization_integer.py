"""Integer quantization: levels, the half-step error bound at every granularity, nibble packing."""

import pytest
import torch

from course_utils.quantization.integer import (
    dequantize_int,
    pack_nibbles,
    quantize_int,
    round_asymmetric,
    unpack_nibbles,
)

GRANULARITIES = [("tensor", None), ("channel", None), ("group", 16)]


def _weights(seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    x = torch.randn(12, 64) * 0.05
    x[3, 5] = 1.5  # one outlier, as trained weights have
    return x


def _step(q) -> torch.Tensor:
    """The scale that applies to each element of q's tensor."""
    return q.scale[..., None].expand(*q.scale.shape, q.group_size).reshape(q.q.shape)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(("granularity", "group_size"), GRANULARITIES)
def test_every_value_is_within_half_a_step(bits, symmetric, granularity, group_size):
    x = _weights()
    q = quantize_int(x, bits, symmetric, granularity, group_size)
    error = (dequantize_int(q) - x).abs()
    assert torch.all(error <= _step(q) / 2 * (1 + 1e-5))
    if symmetric:
        top = 2 ** (bits - 1) - 1
        assert q.q.dtype == torch.int8 and q.q.min() >= -top and q.q.max() <= top
    else:
        assert q.q.dtype == torch.uint8 and q.q.max() <= 2 ** bits - 1


@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_is_exact_and_an_all_zero_tensor_survives(symmetric):
    x = _weights()
    x[0, :16] = 0.0
    assert torch.all(dequantize_int(quantize_int(x, 4, symmetric, "group", 16))[0, :16] == 0)
    zeros = torch.zeros(4, 32)
    assert torch.equal(dequantize_int(quantize_int(zeros, 8, symmetric, "channel")), zeros)


def test_positive_only_data_is_not_clipped_by_the_zero_point():
    x = torch.linspace(10, 11, 64).reshape(2, 32)  # a range far from zero: widened to include it
    q = quantize_int(x, 8, symmetric=False, granularity="channel")
    assert torch.all((dequantize_int(q) - x).abs() <= _step(q) / 2 * (1 + 1e-5))


def test_finer_granularity_contains_an_outlier_and_asymmetric_uses_every_level_on_skewed_data():
    x = _weights()
    errors = {g: (dequantize_int(quantize_int(x, 4, True, g, s)) - x).pow(2).mean() for g, s in GRANULARITIES}
    assert errors["group"] < errors["channel"] < errors["tensor"]
    skewed = torch.rand(8, 64)  # all in [0, 1): symmetric wastes the negative half of its levels
    sym = (dequantize_int(quantize_int(skewed, 4, True, "channel")) - skewed).pow(2).mean()
    asym = (dequantize_int(quantize_int(skewed, 4, False, "channel")) - skewed).pow(2).mean()
    assert asym < sym / 2


def test_asymmetric_rounding_matches_its_formula():
    x = torch.tensor([-1.0, -0.26, 0.0, 0.24, 2.0])
    scale, zero = torch.tensor(0.2), torch.tensor(5.0)
    assert round_asymmetric(x, scale, zero, 4).tolist() == [0, 4, 5, 6, 15]  # -1.0 -> 0 exactly; 2.0 clamps


def test_nibbles_pack_two_to_a_byte_and_come_back():
    q = torch.randint(0, 16, (5, 34), dtype=torch.uint8)
    packed = pack_nibbles(q)
    assert packed.shape == (5, 17) and packed[0, 0] == q[0, 0] | (q[0, 1] << 4)
    assert torch.equal(unpack_nibbles(packed), q)


def test_bad_requests_are_refused_with_a_reason():
    x = _weights()
    with pytest.raises(ValueError, match="bits"):
        quantize_int(x, bits=9)
    with pytest.raises(ValueError, match="group_size must divide"):
        quantize_int(x, 4, granularity="group", group_size=24)
    with pytest.raises(ValueError, match="granularity"):
        quantize_int(x, 4, granularity="row")
    with pytest.raises(TypeError, match="floating-point"):
        quantize_int(torch.arange(8), 4)
    with pytest.raises(ValueError, match="matrix"):
        quantize_int(torch.randn(8), 4, granularity="channel")
    with pytest.raises(ValueError, match="even number"):
        pack_nibbles(torch.zeros(3, dtype=torch.uint8))
