"""Lab 05's reference solution agrees with gguf's Q4_0 bytes and with course_utils.quantization."""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants
from lab_solutions import solution_namespace

from course_utils.quantization.integer import quantize_int


@pytest.fixture(scope="module")
def lab():
    return solution_namespace("05_quantization_lab.ipynb", {"np": np})


def test_q4_0_blocks_are_the_bytes_of_gguf(lab):
    rng = np.random.default_rng(0)
    blocks = (rng.standard_t(3, (200, 32)) * 0.05).astype(np.float32)
    blocks[0] = 0
    blocks[1, :3] = [-8.0, 0.5, -0.5]  # exact halves
    reference = quants.quantize(blocks, GGMLQuantizationType.Q4_0)
    for row, expected in zip(blocks, reference, strict=True):
        assert lab["q4_0_block"](row.tolist()) == expected.tolist()


@pytest.mark.parametrize("bits", [8, 4])
def test_absmax_and_zero_point_match_the_course_quantizer(lab, bits):
    rng = np.random.default_rng(bits)
    for _ in range(20):
        values = (rng.normal(size=64) * rng.uniform(0.01, 3) + rng.uniform(-1, 1)).astype(np.float32)
        x = torch.from_numpy(values)
        q, scale = lab["absmax_quantize"](values.tolist(), bits)
        course = quantize_int(x, bits, symmetric=True)
        assert q == course.q.tolist() and scale == pytest.approx(float(course.scale), rel=1e-6)
        q, scale, zero_point = lab["zero_point_quantize"](values.tolist(), bits)
        course = quantize_int(x, bits, symmetric=False)
        assert q == course.q.tolist() and zero_point == int(course.zero_point)
        assert scale == pytest.approx(float(course.scale), rel=1e-6)
