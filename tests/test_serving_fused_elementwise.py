"""The compiled elementwise loops give PyTorch's results to float32 rounding and refuse what they cannot read."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from course_utils.architecture.rope import apply_rope, inverse_frequencies, rope_cos_sin
from course_utils.serving.fused_elementwise import add_rms_norm_, available, rope_, silu_mul
from course_utils.serving.paged_kernel import kernel_status

pytestmark = pytest.mark.skipif(not available(), reason=f"kernels not built here: {kernel_status()}")


@pytest.mark.parametrize("d", [576, 13, 8])
@pytest.mark.parametrize("with_delta", [True, False])
def test_add_rms_norm_adds_the_residual_in_place_and_normalises_like_torch(d, with_delta):
    torch.manual_seed(d)
    x, delta, weight = 3 * torch.randn(1, 70, d), torch.randn(1, 70, d), torch.rand(d) + 0.5
    expected_x = x + delta if with_delta else x.clone()
    expected = F.rms_norm(expected_x, (d,), weight, 1e-5)
    out = torch.empty_like(x)
    assert add_rms_norm_(x, delta if with_delta else None, weight, 1e-5, out) is out
    assert torch.equal(x, expected_x)  # the addition is exact: the same single rounding as torch's
    assert torch.allclose(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("f", [1536, 11])
def test_silu_mul_is_silu_of_the_gate_times_up(f):
    torch.manual_seed(f)
    gate_up = 6 * torch.randn(3, 64, 2 * f)
    gate_up[0, 0, :4] = torch.tensor([-100.0, 100.0, 0.0, -0.0])  # far tails and both zeros
    gate, up = gate_up.chunk(2, -1)
    assert torch.allclose(silu_mul(gate_up), F.silu(gate) * up, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dim", [64, 24])
def test_rope_rotates_the_first_heads_in_place_and_leaves_the_rest(dim):
    torch.manual_seed(dim)
    n, heads, rotated = 37, 15, 12  # 9 query heads and 3 key heads rotated, 3 value heads left alone
    x = torch.randn(n, heads, dim)
    cos, sin = rope_cos_sin(torch.arange(100, 100 + n), inverse_frequencies(dim, 10000.0)[0], 1.3)
    expected = x.clone()
    expected[:, :rotated] = apply_rope(x[:, :rotated].transpose(0, 1), cos, sin).transpose(0, 1)
    assert rope_(x, cos.contiguous(), sin.contiguous(), rotated) is x
    assert torch.allclose(x, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(x[:, rotated:], expected[:, rotated:])


def test_tensors_the_loops_cannot_read_are_refused_with_what_is_wrong():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="contiguous float32"):
        add_rms_norm_(x.double(), None, torch.ones(8), 1e-5, torch.empty(4, 8))
    with pytest.raises(ValueError, match="not contiguous"):
        silu_mul(torch.randn(8, 4).t())
    with pytest.raises(ValueError, match="shapes do not fit"):
        add_rms_norm_(x, None, torch.ones(7), 1e-5, torch.empty(4, 8))
    with pytest.raises(ValueError, match="two equal halves"):
        silu_mul(torch.randn(2, 5))
    with pytest.raises(ValueError, match="even head size"):
        rope_(torch.randn(2, 3, 5), torch.randn(2, 5), torch.randn(2, 5), 2)


def test_while_labelled_each_loop_shows_in_a_profile_as_elementwise_work():
    from torch.profiler import ProfilerActivity, profile

    from course_utils.serving.fused_elementwise import ELEMENTWISE_SCOPE, labelled

    x = torch.randn(4, 16)
    for label, expected in ((False, 0), (True, 2)):
        with contextlib.ExitStack() as stack:
            if label:
                stack.enter_context(labelled())
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                add_rms_norm_(x, None, torch.ones(16), 1e-5, torch.empty_like(x))
                silu_mul(torch.randn(4, 32))
        assert sum(e.name == ELEMENTWISE_SCOPE for e in prof.events()) == expected
