"""The compiled decode-attention kernel: what gather + SDPA computes, read in place, and never out of bounds."""

import pytest
import torch
import torch.nn.functional as F

from course_utils.serving import paged_kernel
from course_utils.serving.paged_kernel import kernel_status, load_kernel, load_library, paged_decode_attention

needs_kernel = pytest.mark.skipif(load_kernel() is None, reason=f"kernel not built here: {kernel_status()}")


def _pool(num_blocks: int, block_size: int, kv_heads: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.randn(num_blocks * block_size, kv_heads, dim), torch.randn(num_blocks * block_size, kv_heads, dim))


def _gathered_sdpa(q, k, v, tables, lens, block_size):
    """The reference: copy each sequence's blocks out, mask past its length, SDPA with GQA heads expanded."""
    n, heads, dim = q.shape
    kv_heads, width = k.shape[1], tables.shape[1]
    keys = k.view(-1, block_size, kv_heads, dim)[tables.flatten()].view(n, width * block_size, kv_heads, dim)
    values = v.view(-1, block_size, kv_heads, dim)[tables.flatten()].view(n, width * block_size, kv_heads, dim)
    group = heads // kv_heads
    keys = keys.transpose(1, 2).repeat_interleave(group, dim=1)  # (n, H, L, hd)
    values = values.transpose(1, 2).repeat_interleave(group, dim=1)
    mask = (torch.arange(width * block_size)[None] < lens[:, None])[:, None, None]  # (n, 1, 1, L)
    return F.scaled_dot_product_attention(q[:, :, None], keys, values, attn_mask=mask)[:, :, 0]


@needs_kernel
@pytest.mark.parametrize(("heads", "kv_heads", "dim", "block_size"), [(9, 3, 64, 16), (4, 4, 32, 4), (6, 1, 24, 8),
                                                                       (8, 2, 128, 16), (5, 5, 20, 8)])
def test_the_kernel_computes_what_gathering_and_sdpa_compute(heads, kv_heads, dim, block_size):
    torch.manual_seed(heads * dim)
    num_blocks, width = 40, 6
    k, v = _pool(num_blocks, block_size, kv_heads, dim)
    lens = torch.tensor([1, block_size, block_size + 1, width * block_size, 3 * block_size - 1, 7])
    tables = torch.stack([torch.randperm(num_blocks)[:width] for _ in lens])  # scattered, as after many requests
    q = torch.randn(len(lens), heads, dim)
    out = paged_decode_attention(q, k, v, tables, lens, block_size)
    torch.testing.assert_close(out, _gathered_sdpa(q, k, v, tables, lens, block_size), atol=2e-6, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("scores", ["flat", "ordinary", "peaked"])
def test_the_kernels_softmax_holds_for_flat_and_for_peaked_scores(scores):
    """Its vectorised exp against SDPA's softmax. Peaked: small integers in q and k make every score exact
    in float32 whatever the order of summation, and spread them over about 150 (terms past 87 below the
    largest leave float32's normal range), so only the softmax can differ."""
    torch.manual_seed(7)
    k, v = _pool(24, 16, 3, 64)
    lens = torch.tensor([9, 100, 200, 384])
    tables = torch.stack([torch.randperm(24) for _ in lens])
    q = {"flat": torch.zeros(len(lens), 9, 64), "ordinary": torch.randn(len(lens), 9, 64),
         "peaked": torch.randint(-8, 9, (len(lens), 9, 64)).float()}[scores]
    if scores == "peaked":
        k = torch.randint(-8, 9, k.shape).float()
    out = paged_decode_attention(q, k, v, tables, lens, 16)
    torch.testing.assert_close(out, _gathered_sdpa(q, k, v, tables, lens, 16), atol=2e-6, rtol=1e-5)
    if scores == "peaked":  # as described: the last sequence (the whole pool) sees scores spread past 87
        seen = q[-1, :3] @ k[:, 0].T / 8  # its first three heads, which read key-value head 0
        assert (seen.max(dim=-1).values - seen.min(dim=-1).values).min() > 87


@needs_kernel
def test_the_kernel_reads_only_each_sequences_own_blocks_and_length():
    torch.manual_seed(0)
    k, v = _pool(8, 4, 2, 16)
    q, tables, lens = torch.randn(1, 4, 16), torch.tensor([[5, 2]]), torch.tensor([6])
    before = paged_decode_attention(q, k, v, tables, lens, 4)
    for pool in (k, v):  # other sequences' blocks, and the slots of block 2 past the length
        blocks = pool.view(8, 4, 2, 16)
        blocks[[0, 1, 3, 4, 6, 7]] = 1e4
        blocks[2, 2:] = 1e4
    assert torch.equal(paged_decode_attention(q, k, v, tables, lens, 4), before)


@needs_kernel
@pytest.mark.parametrize(("tables", "lens"), [
    ([[0, 99]], [8]),  # a block id past the pool
    ([[0, -1]], [8]),  # a negative block id
    ([[0, 1]], [9]),  # longer than its table holds
    ([[0, 1]], [0]),  # nothing to attend to
])
def test_the_kernel_refuses_tables_that_would_read_outside_the_pool(tables, lens):
    k, v = _pool(8, 4, 2, 16)
    with pytest.raises(ValueError, match="block id is outside the pool|exceeds its block table"):
        paged_decode_attention(torch.randn(1, 4, 16), k, v, torch.tensor(tables), torch.tensor(lens), 4)


@needs_kernel
def test_the_kernel_refuses_tensors_it_cannot_read():
    k, v = _pool(8, 4, 2, 16)
    q, tables, lens = torch.randn(1, 4, 16), torch.tensor([[0, 1]]), torch.tensor([5])
    with pytest.raises(ValueError, match="float32"):
        paged_decode_attention(q.double(), k, v, tables, lens, 4)
    with pytest.raises(ValueError, match="contiguous"):
        paged_decode_attention(q, k.transpose(0, 1), v, tables, lens, 4)
    with pytest.raises(ValueError, match="shapes do not fit"):
        paged_decode_attention(torch.randn(1, 3, 16), k, v, tables, lens, 4)  # 3 heads over 2 kv heads


def test_without_a_compiler_the_kernel_is_none_and_says_why(monkeypatch):
    monkeypatch.setattr(paged_kernel, "_status", paged_kernel._status)  # restored after the test
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(paged_kernel.shutil, "which", lambda name: None)
    assert load_library.__wrapped__() is None and "no C compiler" in kernel_status()
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert load_library.__wrapped__() is None and "the build failed" in kernel_status()


@needs_kernel
def test_a_kernel_that_builds_but_cannot_load_is_none_and_says_why(monkeypatch):
    monkeypatch.setattr(paged_kernel, "_status", paged_kernel._status)

    def refuse(path):
        raise OSError(f"{path}: failed to map segment from shared object")

    monkeypatch.setattr(paged_kernel.ctypes, "CDLL", refuse)
    assert load_library.__wrapped__() is None and "could not be loaded" in kernel_status()
