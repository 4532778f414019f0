"""Paged KV bookkeeping: allocation, growth, freeing, and prefix sharing by block hashes."""

import pytest

from course_utils.serving.block_manager import BlockManager
from course_utils.serving.sequence import Sequence


def grow(manager: BlockManager, seq: Sequence, n: int) -> None:
    """Append n generated tokens the way the engine does: token first, then its slot."""
    for _ in range(n):
        seq.output_token_ids.append(7)
        manager.append_slot(seq)


def prefill(manager: BlockManager, seq: Sequence) -> None:
    """What the engine does after a successful step: the prompt's keys and values are written."""
    seq.num_computed_tokens = len(seq)
    manager.mark_computed(seq)


def test_blocks_are_taken_as_needed_and_all_come_back():
    manager = BlockManager(num_blocks=8, block_size=4)
    seq = Sequence(list(range(10)))  # 10 tokens: 3 blocks (4 + 4 + 2)
    manager.allocate(seq)
    assert len(seq.block_table) == 3 and manager.num_free_blocks == 5
    grow(manager, seq, 2)  # 12 tokens: still 3 blocks
    assert len(seq.block_table) == 3
    grow(manager, seq, 1)  # the 13th token opens a 4th block
    assert len(seq.block_table) == 4 and manager.num_free_blocks == 4
    assert [manager.slot(seq, p) for p in (0, 5, 12)] == [
        seq.block_table[0] * 4, seq.block_table[1] * 4 + 1, seq.block_table[3] * 4]
    manager.free(seq)
    assert manager.num_free_blocks == 8 and seq.block_table == []


def test_shared_prefix_blocks_are_reused_and_reference_counted():
    manager = BlockManager(num_blocks=10, block_size=4)
    system = list(range(100, 108))  # two full blocks of "system prompt"
    first, second = Sequence(system + [1, 2, 3]), Sequence(system + [4, 5])
    manager.allocate(first)
    prefill(manager, first)
    manager.allocate(second)
    assert second.block_table[:2] == first.block_table[:2] and second.num_cached_tokens == 8
    assert second.block_table[2] != first.block_table[2]
    assert manager.num_free_blocks == 10 - 4  # 3 blocks for the first, 1 new for the second
    manager.free(first)
    assert manager.num_free_blocks == 10 - 3  # the shared blocks are still held by the second
    manager.free(second)
    assert manager.num_free_blocks == 10
    third = Sequence(system + [9])  # after both finished, the prefix is still cached
    manager.allocate(third)
    assert third.num_cached_tokens == 8


def test_the_last_prompt_token_is_always_computed():
    manager = BlockManager(num_blocks=10, block_size=4)
    prompt = list(range(8))  # exactly two blocks
    a, b = Sequence(prompt), Sequence(prompt)
    manager.allocate(a)
    prefill(manager, a)
    manager.allocate(b)
    assert b.num_cached_tokens == 4  # the second block holds the last token, whose logits are needed


def test_a_reused_free_block_forgets_its_old_prefix():
    manager = BlockManager(num_blocks=2, block_size=4)
    old = Sequence(list(range(5)))
    manager.allocate(old)
    prefill(manager, old)
    manager.free(old)
    new = Sequence([50, 51, 52, 53, 54, 55, 56])
    manager.allocate(new)  # takes both blocks, overwriting them
    prefill(manager, new)
    assert manager.cached and all(manager.blocks[b].token_ids[:1] != [0] for b in manager.cached.values())


def test_generated_tokens_fill_blocks_that_later_prompts_can_share():
    manager = BlockManager(num_blocks=10, block_size=4)
    seq = Sequence([1, 2, 3])
    manager.allocate(seq)
    grow(manager, seq, 2)  # 5 tokens: block 0 is now full and was sealed when block 1 opened
    follower = Sequence(seq.token_ids[:4] + [99])
    manager.allocate(follower)
    assert follower.num_cached_tokens == 4 and follower.block_table[0] == seq.block_table[0]


def test_running_out_of_blocks_is_reported_not_hidden():
    manager = BlockManager(num_blocks=2, block_size=2)
    seq = Sequence([1, 2, 3, 4])
    assert manager.can_allocate(seq)
    manager.allocate(seq)
    seq.output_token_ids.append(5)
    assert not manager.can_append(seq)
    with pytest.raises(RuntimeError, match="can_append"):
        manager.append_slot(seq)
    assert not manager.can_allocate(Sequence([1]))
    with pytest.raises(RuntimeError, match="can_allocate"):
        manager.allocate(Sequence([1]))
    with pytest.raises(ValueError, match="num_blocks"):
        BlockManager(0, 4)


def test_prefix_caching_can_be_switched_off():
    manager = BlockManager(num_blocks=10, block_size=4, enable_prefix_caching=False)
    a, b = Sequence(list(range(9))), Sequence(list(range(9)))
    manager.allocate(a)
    manager.allocate(b)
    assert b.num_cached_tokens == 0 and not set(a.block_table) & set(b.block_table)


def test_prompt_blocks_whose_prefill_never_ran_are_not_offered_for_reuse():
    manager = BlockManager(num_blocks=10, block_size=4)
    system = list(range(100, 108))
    failed = Sequence(system + [1])
    manager.allocate(failed)  # admitted, then its step failed: no KV was written
    manager.free(failed)
    later = Sequence(system + [2])
    manager.allocate(later)
    assert later.num_cached_tokens == 0  # it computes the prefix itself
    prefill(manager, later)
    manager.free(later)
    third = Sequence(system + [3])
    manager.allocate(third)
    assert third.num_cached_tokens == 8  # now the prefix is real and shared
