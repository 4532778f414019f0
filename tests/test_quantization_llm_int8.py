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


def _two_layer_model():
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(32, 16), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    return model


def test_linear_inputs_records_what_each_layer_read_across_batches():
    from course_utils.quantization.llm_int8 import linear_inputs

    model = _two_layer_model()
    batches = [torch.tensor([1, 2, 3]), torch.tensor([[4, 5], [6, 7]])]
    seen = linear_inputs(model, {"first": model[1], "second": model[3]}, batches)
    embedded = torch.cat([model[0](torch.tensor([1, 2, 3])), model[0](torch.tensor([4, 5, 6, 7]))])
    assert seen["first"].shape == (7, 16) and torch.equal(seen["first"], embedded.detach())
    assert torch.equal(seen["second"], torch.relu(model[1](embedded)).detach())
    assert not model[1]._forward_hooks and not model[3]._forward_hooks  # hooks removed
    with pytest.raises(ValueError, match="never called"):
        linear_inputs(model, {"stray": torch.nn.Linear(2, 2)}, batches)


def test_outlier_census_counts_dimensions_tokens_and_the_largest_value():
    from course_utils.quantization.llm_int8 import outlier_census

    x = torch.zeros(10, 32)
    x[:4, 5] = 7.0   # dimension 5 crosses 6.0 in 4 of 10 tokens
    x[2, 9] = -25.0  # dimension 9 holds the largest magnitude, in a token already counted
    x[7, 1] = 5.9    # below the threshold
    stats = outlier_census({"layer": x})["layer"]
    assert (stats.max_abs, stats.dims, stats.top_dim) == (25.0, 2, 9)
    assert stats.token_share == pytest.approx(0.4)
    assert outlier_census({"layer": x}, threshold=30.0)["layer"].dims == 0
