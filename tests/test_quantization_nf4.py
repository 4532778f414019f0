"""NF4: bitsandbytes' codebook, its block size, nibble order and (double-quantized) scales."""

import pytest
import torch

from course_utils.quantization.nf4 import NF4_CODE, dequantize_nf4, dynamic_map, nf4_levels_from_normal, quantize_nf4

bnb_functional = pytest.importorskip("bitsandbytes.functional")


def _weights(shape, seed):
    torch.manual_seed(seed)
    return torch.randn(shape) * 0.05


def test_the_codebook_is_bitsandbytes_and_follows_from_normal_quantiles():
    assert torch.equal(NF4_CODE, bnb_functional.get_4bit_type("nf4", device="cpu"))
    assert (nf4_levels_from_normal() - NF4_CODE).abs().max() < 2e-7
    assert NF4_CODE[7] == 0 and (NF4_CODE > 0).sum() == 8 and (NF4_CODE < 0).sum() == 7
    assert torch.equal(dynamic_map(), bnb_functional.create_dynamic_map())


@pytest.mark.parametrize(("shape", "seed"), [((576, 576), 0), ((300, 64), 1), ((1536, 576), 2), ((64,), 3)])
def test_codes_packing_and_scales_match_bitsandbytes(shape, seed):
    x = _weights(shape, seed)
    packed, state = bnb_functional.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=False)
    ours = quantize_nf4(x, double_quant=False)
    assert torch.equal(ours.packed, packed.reshape(-1)) and torch.equal(ours.absmax, state.absmax)
    assert torch.equal(dequantize_nf4(ours), bnb_functional.dequantize_4bit(packed, state).reshape(shape))


def test_the_first_value_of_each_pair_sits_in_the_high_nibble():
    x = torch.zeros(64)
    x[0], x[1] = 1.0, -1.0  # levels 15 and 0
    assert quantize_nf4(x, double_quant=False).packed[0] == 0xF0


@pytest.mark.parametrize("seed", [0, 1])
def test_double_quantization_keeps_the_second_level_scales_and_picks_the_nearest_8_bit_level(seed):
    x = _weights((1536, 576), seed)
    packed, state = bnb_functional.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True)
    ours = quantize_nf4(x)
    assert torch.equal(ours.packed, packed.reshape(-1))
    assert torch.equal(ours.offset, state.offset) and torch.equal(ours.scale_absmax, state.state2.absmax)
    same = ours.absmax == state.absmax
    assert same.float().mean() > 0.99  # bitsandbytes' CPU binary search is off by a level on a few
    # where the codes differ, ours is the nearer level
    centred = x.reshape(-1, 64).abs().amax(1) - state.offset
    step = state.state2.absmax.repeat_interleave(256)[:len(centred)]
    code = dynamic_map()
    ours_error = (code[ours.absmax.long()] * step - centred).abs()
    theirs_error = (code[state.absmax.long()] * step - centred).abs()
    assert torch.all(ours_error[~same] <= theirs_error[~same] + 1e-6 * step[~same])  # ties: float rounding
    decoded = ours.block_scales()
    reference = bnb_functional.dequantize_blockwise(state.absmax, state.state2) + state.offset
    assert torch.equal(decoded[same], reference[same])


def test_storage_is_about_4_127_bits_per_weight_and_the_error_is_bounded_by_the_levels():
    x = _weights((1024, 1024), 4)
    q = quantize_nf4(x)
    assert 8 * q.nbytes / x.numel() == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=1e-3)
    widest_gap = (NF4_CODE[1:] - NF4_CODE[:-1]).max()
    error = (dequantize_nf4(q) - x).abs().reshape(-1, 64)
    assert torch.all(error <= (widest_gap / 2 + 0.01) * x.abs().reshape(-1, 64).amax(1, keepdim=True))
    assert torch.equal(dequantize_nf4(quantize_nf4(torch.zeros(128))), torch.zeros(128))
    with pytest.raises(ValueError, match="blocks of 64"):
        quantize_nf4(torch.zeros(100))
