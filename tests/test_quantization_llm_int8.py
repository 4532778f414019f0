"""LLM.int8(): the outlier decomposition, against plain int8 and against bitsandbytes."""

import pytest
import torch

from course_utils.quantization.integer import dequantize_int, quantize_int
from course_utils.quantization.llm_int8 import int8_matmul, outlier_columns


def _layer(seed: int = 0, outliers=(7, 90)):
    torch.manual_seed(seed)
    weight = torch.randn(96, 128) * 0.05
    x = torch.randn(20, 128)
    x[:, list(outliers)] *= 30  # a few hidden dimensions with huge activations in every token
    return weight, x, quantize_int(weight, 8, symmetric=True, granularity="channel")


def test_outlier_columns_are_the_dimensions_with_any_value_past_the_threshold():
    _, x, _ = _layer()
    assert outlier_columns(x).tolist() == [7, 90]
    assert outlier_columns(x, threshold=1e9).numel() == 0


def test_without_outliers_it_is_vector_wise_int8_computed_exactly():
    weight, x, wq = _layer(outliers=())
    assert outlier_columns(x).numel() == 0
    xq = quantize_int(x, 8, symmetric=True, granularity="channel")
    expected = dequantize_int(xq).double() @ dequantize_int(wq).double().T
    assert torch.allclose(int8_matmul(x, wq.q, wq.scale[:, 0]).double(), expected, rtol=1e-5, atol=1e-6)


def test_the_decomposition_cuts_the_error_that_outliers_cause():
    weight, x, wq = _layer()
    exact = x @ weight.T
    decomposed = (int8_matmul(x, wq.q, wq.scale[:, 0]) - exact).abs().mean()
    plain = (int8_matmul(x, wq.q, wq.scale[:, 0], threshold=float("inf")) - exact).abs().mean()
    assert decomposed < plain / 3
    batched = int8_matmul(x.reshape(4, 5, 128), wq.q, wq.scale[:, 0])
    assert torch.allclose(batched.reshape(20, 96), int8_matmul(x, wq.q, wq.scale[:, 0]))


def test_agrees_with_bitsandbytes_int8_mixed_matmul():
    bnb_functional = pytest.importorskip("bitsandbytes.functional")
    weight, x, wq = _layer(seed=3)
    cb, scb, _ = bnb_functional.int8_vectorwise_quant(weight.clone())
    assert torch.equal(cb, wq.q) and torch.allclose(scb / 127, wq.scale[:, 0])
    ca, sca, columns = bnb_functional.int8_vectorwise_quant(x.clone(), threshold=6.0)
    theirs, _ = torch.ops.bitsandbytes.int8_mixed_scaled_mm(x, ca, cb, sca, scb, columns, None)
    assert columns.tolist() == outlier_columns(x).tolist()
    ours = int8_matmul(x, wq.q, wq.scale[:, 0])
    # bitsandbytes lets the outlier columns' ordinary values into each row's scale; we leave the
    # whole columns out. Both are the method; the difference is far below the quantization error.
    exact = x @ weight.T
    assert (ours - theirs).abs().mean() < 0.2 * (theirs - exact).abs().mean()
    assert (ours - exact).abs().mean() <= 1.1 * (theirs - exact).abs().mean()
