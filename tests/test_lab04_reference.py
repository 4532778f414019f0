"""Lab 04's reference solution agrees with the course's own serving code it mirrors."""

import random
from collections import deque

import numpy as np
import pytest
import torch
from lab_solutions import solution_namespace

from course_utils.serving.block_manager import BlockManager
from course_utils.serving.sampling import top_p_mask
from course_utils.serving.sequence import Sequence


@pytest.fixture(scope="module")
def lab():
    return solution_namespace("04_serving_lab.ipynb", {"deque": deque, "np": np})


@pytest.mark.parametrize("seed", range(5))
def test_the_allocator_matches_the_engines_block_manager(lab, seed):
    rng = random.Random(seed)
    ours, course = lab["PagedAllocator"](12, 4), BlockManager(12, 4, enable_prefix_caching=False)
    seqs: dict[int, Sequence] = {}
    for step in range(200):
        live = list(seqs)
        action = rng.choice(["allocate", "append", "append", "append", "free"] if live else ["allocate"])
        if action == "allocate":
            seq = Sequence([rng.randrange(100) for _ in range(rng.randint(1, 10))])
            if not course.can_allocate(seq):
                with pytest.raises(MemoryError):
                    ours.allocate(step, len(seq))
                continue
            course.allocate(seq)
            assert ours.allocate(step, len(seq)) == seq.block_table
            seqs[step] = seq
        elif action == "append":
            key = rng.choice(live)
            seqs[key].output_token_ids.append(0)
            if not course.can_append(seqs[key]):
                seqs[key].output_token_ids.pop()
                with pytest.raises(MemoryError):
                    ours.append(key)
                continue
            course.append_slot(seqs[key])
            assert ours.append(key) == course.slot(seqs[key], len(seqs[key]) - 1)
        else:
            key = rng.choice(live)
            course.free(seqs.pop(key))
            ours.free(key)
        assert list(ours.free_blocks) == list(course.free_block_ids)
        assert ours.tables == {k: s.block_table for k, s in seqs.items()}


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.999, 1.0])
def test_top_p_keeps_the_tokens_the_engines_sampler_keeps(lab, p):
    generator = torch.Generator().manual_seed(int(p * 1000))
    for _ in range(20):
        logits = torch.randn(50, generator=generator, dtype=torch.float64) * 3
        kept = np.asarray(lab["top_p_filter"](logits.tolist(), p)) > 0
        assert (kept == ~top_p_mask(logits, p).numpy()).all()


def test_draw_follows_the_distribution(lab):
    probs = [0.5, 0.0, 0.3, 0.2]
    rng = np.random.default_rng(0)
    counts = np.bincount([lab["draw"](probs, rng.random()) for _ in range(20000)], minlength=4)
    assert counts[1] == 0
    assert np.allclose(counts / counts.sum(), probs, atol=0.015)
