"""Prepacked weights: the same products as nn.Linear, shared modules, never stale."""

import pytest
import torch
from torch import nn

from course_utils.architecture.transformer import Llama, LlamaConfig
from course_utils.serving.prepacked import PrepackedLinear, can_pack_for_mkl, can_prepack, prepacked_copy

pytestmark = pytest.mark.skipif(not can_prepack(nn.Linear(2, 2)), reason="this PyTorch build has no oneDNN packing")


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal up to float32 rounding of a different summation order."""
    return actual.shape == expected.shape and bool((actual - expected).abs().max() <= 1e-5 * expected.abs().max())


@pytest.mark.parametrize("rows", [1, 3, 16, 17, 200])
def test_a_prepacked_linear_computes_the_same_product_for_any_number_of_rows(rows):
    torch.manual_seed(rows)
    linear = nn.Linear(96, 160, bias=rows % 2 == 1)
    packed = PrepackedLinear(linear, rows_hint=16)
    x = torch.randn(2, rows, 96)
    assert _close(packed(x), linear(x).detach())


def test_a_prepacked_linear_follows_its_weight_when_it_changes():
    torch.manual_seed(0)
    linear = nn.Linear(32, 48, bias=False)
    packed, x = PrepackedLinear(linear, rows_hint=4), torch.randn(4, 32)
    with torch.no_grad():
        linear.weight.mul_(-2.0)  # an in-place update, as an optimizer step makes
    assert _close(packed(x), linear(x).detach())
    linear.weight = nn.Parameter(torch.randn(48, 32))  # a new tensor altogether
    assert _close(packed(x), linear(x).detach())


def test_a_prepacked_linear_follows_a_parametrized_weight():
    """A parametrization (weight norm, say) computes the weight at each access: still never stale."""
    from torch.nn.utils import parametrize

    class Doubled(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return 2 * w

    torch.manual_seed(0)
    linear = nn.Linear(32, 48, bias=False)
    packed, x = PrepackedLinear(linear, rows_hint=4), torch.randn(4, 32)
    parametrize.register_parametrization(linear, "weight", Doubled())
    assert _close(packed(x), linear(x).detach())
    with torch.no_grad():
        linear.parametrizations.weight.original.mul_(-1.0)
    assert _close(packed(x), linear(x).detach())


def test_the_prepacked_copy_shares_everything_but_the_linear_layers_and_gives_the_same_logits():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=96)
    model = Llama(config)
    model.init_weights()
    fast = prepacked_copy(model, rows_hint=8)
    assert fast.embed_tokens is model.embed_tokens and fast.norm is model.norm
    assert fast.layers[1].input_layernorm is model.layers[1].input_layernorm
    up = fast.layers[0].mlp.up_proj
    assert isinstance(up, PrepackedLinear) and up.sources == (model.layers[0].mlp.up_proj,)
    assert type(model.layers[0].mlp.up_proj) is nn.Linear and type(model.lm_head) is nn.Linear  # original untouched
    ids = torch.randint(0, 64, (3, 10))
    with torch.inference_mode():
        assert _close(fast(ids), model(ids))


def test_stacked_linear_layers_give_their_outputs_side_by_side_and_follow_each_weight():
    torch.manual_seed(0)
    layers = [nn.Linear(40, n, bias=False) for n in (24, 8, 8)]
    packed, x = PrepackedLinear(layers, rows_hint=4), torch.randn(5, 40)
    assert _close(packed(x), torch.cat([lin(x) for lin in layers], -1).detach())
    with torch.no_grad():
        layers[2].weight.add_(1.0)  # only the last one changes
    assert _close(packed(x), torch.cat([lin(x) for lin in layers], -1).detach())


def test_stacking_refuses_layers_that_do_not_fit_together():
    with pytest.raises(ValueError, match="same in_features"):
        PrepackedLinear([nn.Linear(4, 4), nn.Linear(5, 4)], rows_hint=4)
    with pytest.raises(ValueError, match="bias"):
        PrepackedLinear([nn.Linear(4, 4), nn.Linear(4, 4, bias=False)], rows_hint=4)
    with pytest.raises(ValueError, match="one or more"):
        PrepackedLinear([], rows_hint=4)


mkl_only = pytest.mark.skipif(not can_pack_for_mkl(), reason="this PyTorch build has no MKL packing")


@mkl_only
@pytest.mark.parametrize("rows", [1, 15, 16, 17])
def test_an_mkl_packed_full_batch_gives_the_same_product_at_every_row_count(rows):
    torch.manual_seed(rows)
    linears = [nn.Linear(96, 80), nn.Linear(96, 48)]
    packed = PrepackedLinear(linears, rows_hint=16, full_batch_mkl=True)
    x = torch.randn(rows, 96)
    assert _close(packed(x), torch.cat([lin(x) for lin in linears], dim=-1).detach())


@mkl_only
def test_only_a_full_batch_is_served_from_the_mkl_copy_and_dropping_it_frees_it():
    torch.manual_seed(0)
    linear = nn.Linear(32, 48, bias=False)
    packed = PrepackedLinear(linear, rows_hint=8, full_batch_mkl=True)
    # swap in an MKL copy of twice the weight: only the products it serves double
    packed.mkl_packed = torch.ops.mkl._mkl_reorder_linear_weight(2 * linear.weight.detach(), 8)
    assert _close(packed(x := torch.randn(8, 32)), 2 * linear(x).detach())
    assert _close(packed(x := torch.randn(7, 32)), linear(x).detach())
    packed.use_mkl_for_full_batch(False)
    assert packed.mkl_packed is None and _close(packed(x := torch.randn(8, 32)), linear(x).detach())


@mkl_only
def test_the_mkl_copy_follows_its_weight_when_it_changes():
    torch.manual_seed(2)
    linear = nn.Linear(32, 48)
    packed, x = PrepackedLinear(linear, rows_hint=4, full_batch_mkl=True), torch.randn(4, 32)
    with torch.no_grad():
        linear.weight.mul_(-2.0)
        linear.bias.add_(1.0)
    assert _close(packed(x), linear(x).detach())
