"""GGUF Q8_0 / Q4_0 / Q4_1: the same bytes and the same dequantized values as the gguf package."""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from course_utils.quantization.gguf_blocks import GGUF_FORMATS, dequantize_gguf, quantize_gguf

FORMATS = ["Q8_0", "Q4_0", "Q4_1"]


def _edge_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ties = np.zeros((1, 32), np.float32)
    ties[0, :6] = [127.0, 2.5, -2.5, 0.5, -0.5, 126.5]  # Q8_0 with d = 1: halves that roundf sends away from 0
    return {
        "random": (rng.standard_normal((16, 256)) * 0.05).astype(np.float32),
        "heavy tails": rng.standard_t(2, (8, 64)).astype(np.float32),
        "all zero": np.zeros((2, 32), np.float32),
        "largest magnitude negative": np.array([[-5.0] + [1.0] * 30 + [4.9]], np.float32),
        "equal magnitudes, opposite signs": np.array([[3.0, -3.0] + [0.25] * 30], np.float32),
        "exact halves": ties,
        "steps of a half": ((np.arange(32, dtype=np.float32) - 16) / 2)[None],
        "tiny": (rng.standard_normal((2, 64)) * 1e-6).astype(np.float32),
    }


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(_edge_cases()))
def test_bytes_and_values_match_the_gguf_reference(fmt, case):
    x = _edge_cases()[case]
    qtype = getattr(GGMLQuantizationType, fmt)
    reference = quants.quantize(x, qtype)  # (rows, bytes)
    ours = quantize_gguf(torch.from_numpy(x), fmt)  # (rows, blocks, block bytes)
    assert ours.shape == (x.shape[0], x.shape[1] // 32, GGUF_FORMATS[fmt].block_bytes)
    assert np.array_equal(ours.reshape(x.shape[0], -1).numpy(), reference)
    assert np.array_equal(dequantize_gguf(ours, fmt).numpy(), quants.dequantize(reference, qtype))


def test_q8_0_rounds_halves_away_from_zero_unlike_torch_round():
    x = torch.from_numpy(_edge_cases()["exact halves"])
    q = quantize_gguf(x, "Q8_0")[0, 0, 2:].view(torch.int8)
    assert q[:6].tolist() == [127, 3, -3, 1, -1, 127]  # torch.round would give 2, -2, 0, -0, 126


def test_q4_0_puts_the_signed_extreme_on_level_minus_8_and_packs_value_j_with_j_plus_16():
    x = torch.from_numpy(_edge_cases()["largest magnitude negative"])
    record = quantize_gguf(x, "Q4_0")[0, 0]
    assert record[:2].view(torch.float16).item() == pytest.approx(5 / 8)  # d = -5 / -8
    codes = torch.cat([record[2:] & 0x0F, record[2:] >> 4])
    assert codes[0] == 0 and codes[31] == 15  # -5 -> level -8, +4.9 -> clamped at +7
    assert record[2] == codes[0] | (codes[16] << 4)
    assert dequantize_gguf(record[None], "Q4_0")[0] == -5.0


def test_bits_per_weight_and_bad_input():
    assert [GGUF_FORMATS[f].bits_per_weight for f in FORMATS] == [8.5, 4.5, 5.0]
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_gguf(torch.zeros(4, 40), "Q4_0")
    with pytest.raises(ValueError, match="unknown GGUF block format"):
        quantize_gguf(torch.zeros(32), "Q4_K")
    with pytest.raises(ValueError, match="uint8"):
        dequantize_gguf(torch.zeros(2, 18), "Q4_0")


def test_requantizing_dequantized_q4_1_weights_gives_back_the_same_bytes():
    """Why re-quantizing the embedded model (shipped as Q4_1) to Q4_1 costs nothing."""
    torch.manual_seed(0)
    once = quantize_gguf(torch.randn(64, 128) * 0.05, "Q4_1")
    assert torch.equal(quantize_gguf(dequantize_gguf(once, "Q4_1"), "Q4_1"), once)
