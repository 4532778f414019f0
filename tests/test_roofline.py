"""The roofline model of a decode step, and the measurements that feed it."""

import numpy as np
import pytest

from course_utils.architecture.transformer import Llama, LlamaConfig
from course_utils.serving.roofline import (
    decode_step_seconds,
    decode_step_times,
    fit_step_cost,
    knee_batch,
    matmul_flops,
    memory_bandwidth,
    predicted_step_cost,
    roofline_tokens_per_s,
)


def test_the_roofline_is_memory_bound_below_the_knee_and_flat_above_it():
    # 1e9 parameters in 2e9 bytes, 1 TFLOP/s, 100 GB/s: a step reads the weights in 20 ms, and
    # a batch of B costs 2 ms x B of arithmetic, so the two meet at B = 10.
    machine = dict(params=1e9, weight_bytes=2e9, peak_flops=1e12, bandwidth=1e11)
    assert knee_batch(**machine) == pytest.approx(10)
    assert roofline_tokens_per_s(1, **machine) == pytest.approx(50)  # 1 token per 20 ms
    assert roofline_tokens_per_s(10, **machine) == pytest.approx(500)  # still 20 ms per step
    assert roofline_tokens_per_s(20, **machine) == pytest.approx(500)  # 40 ms per step: the ceiling
    assert roofline_tokens_per_s(1000, **machine) == pytest.approx(1e12 / 2e9)
    with pytest.raises(ValueError, match="batch"):
        roofline_tokens_per_s(0, **machine)


def test_measured_limits_are_plausible_for_a_cpu():
    flops, bandwidth = matmul_flops(n=256, repeats=2), memory_bandwidth(nbytes=32 * 2 ** 20, repeats=2)
    assert 1e8 < flops < 1e14 and 1e8 < bandwidth < 1e13


def test_a_decode_step_is_timed_for_the_batch_and_context_asked():
    config = LlamaConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)
    model = Llama(config)
    model.init_weights()
    assert decode_step_seconds(model, batch=3, context=100, repeats=1) > 0
    times = decode_step_times(model, batch=3, context=100, repeats=4)
    assert len(times) == 4 and all(t > 0 for t in times)
    with pytest.raises(ValueError, match="batch"):
        decode_step_seconds(model, batch=0, context=4)
    with pytest.raises(ValueError, match="context"):
        decode_step_seconds(model, batch=1, context=-1)


def test_the_predicted_step_cost_has_the_rooflines_knee():
    machine = dict(params=1e9, weight_bytes=2e9, peak_flops=1e12, bandwidth=1e11)
    cost = predicted_step_cost(**machine)
    assert cost.fixed_s == pytest.approx(0.02) and cost.per_sequence_s == pytest.approx(0.002)
    assert cost.knee == pytest.approx(knee_batch(**machine))


def test_a_fitted_step_cost_recovers_fixed_and_per_sequence_parts_from_noisy_times():
    rng = np.random.default_rng(0)
    batches = [1, 2, 4, 8, 16, 32, 64]
    times = [(0.05 + 0.003 * b) * rng.uniform(0.97, 1.03) for b in batches]  # 3% timing noise
    cost = fit_step_cost(batches, times)
    assert cost.fixed_s == pytest.approx(0.05, rel=0.1) and cost.per_sequence_s == pytest.approx(0.003, rel=0.1)
    assert cost.knee == pytest.approx(0.05 / 0.003, rel=0.15)
    exact = fit_step_cost([1, 4], [0.053, 0.062])  # two points: the line through them
    assert exact.fixed_s == pytest.approx(0.05) and exact.per_sequence_s == pytest.approx(0.003)


@pytest.mark.parametrize(("batches", "times"), [([1], [0.1]), ([2, 2], [0.1, 0.1]), ([1, 2], [0.1, 0.0]),
                                                ([1, 2], [0.2, 0.1]), ([1, 2, 3], [0.1, 0.2])])
def test_a_step_cost_is_not_fitted_to_times_that_cannot_give_one(batches, times):
    with pytest.raises(ValueError):
        fit_step_cost(batches, times)
