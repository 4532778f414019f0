"""The paged KV cache's bookkeeping: fixed-size blocks, a free list, block tables, prefix sharing.

The KV cache is one pool of ``num_blocks`` blocks of ``block_size`` token slots each (the model
runner holds the tensors; this class only decides which block holds what). A sequence owns a
*block table*, the list of its blocks in order, and grows one block at a time, so no memory is
reserved for tokens that may never be generated: that is PagedAttention's answer to the waste of
pre-allocating every request to its maximum length (Kwon et al. 2023).

Prefix caching: a *full* block is identified by a hash of its tokens chained with the hash of
the block before it, so equal hashes mean equal prefixes. A new prompt whose first blocks hash
to blocks already in the pool reuses them (their reference count goes up) and skips computing
them. A prompt's block becomes reusable only once its keys and values are written
(:meth:`BlockManager.mark_computed`, called by the engine after a successful step): a step that
fails must not leave blocks that promise KV nobody computed. Freed blocks keep their hash until
they are handed out again, so a popular system prompt stays reusable after its requests finish.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from course_utils.serving.sequence import Sequence

__all__ = ["Block", "BlockManager", "block_hash"]


def block_hash(tokens: list[int], previous: int | None) -> int:
    """Hash of a full block's tokens chained with the previous block's hash (None for the first)."""
    return hash((previous, tuple(tokens)))


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None  # set once the block is full
    token_ids: list[int] = field(default_factory=list)  # kept to rule out hash collisions


class BlockManager:
    """Allocates, grows and frees the KV blocks of sequences; shares full prefix blocks."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks} and {block_size}")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_block_ids: deque[int] = deque(range(num_blocks))
        self.cached: dict[int, int] = {}  # block hash -> block id

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    def _take_free_block(self) -> Block:
        block = self.blocks[self.free_block_ids.popleft()]
        if block.hash is not None and self.cached.get(block.hash) == block.block_id:
            del self.cached[block.hash]  # its old contents are about to be overwritten
        block.ref_count, block.hash, block.token_ids = 1, None, []
        return block

    def _seal(self, block: Block, tokens: list[int], previous: int | None, computed: bool = True) -> None:
        """Record a full block's hash; with ``computed`` (its KV is written) later prompts can reuse it."""
        block.token_ids = list(tokens)
        if self.enable_prefix_caching:
            block.hash = block_hash(tokens, previous)
            if computed:
                self.cached.setdefault(block.hash, block.block_id)

    def mark_computed(self, seq: Sequence, previously_computed: int = 0) -> None:
        """The keys and values of ``seq``'s first ``num_computed_tokens`` are written: offer its full
        prompt blocks for reuse (a hit elsewhere keeps the block already cached). Blocks already
        full at ``previously_computed`` tokens were offered before and are skipped."""
        first, end = previously_computed // self.block_size, seq.num_computed_tokens // self.block_size
        for block_id in seq.block_table[first:end]:
            block = self.blocks[block_id]
            if block.hash is not None:
                self.cached.setdefault(block.hash, block_id)

    def can_allocate(self, seq: Sequence) -> bool:
        """Whether the prompt fits in the free blocks (counting no cache hits: a safe bound)."""
        return seq.num_blocks(self.block_size) <= self.num_free_blocks

    def allocate(self, seq: Sequence) -> None:
        """Give a waiting sequence blocks for all its tokens, reusing cached prefix blocks.

        At least the last token is always left to compute, since its logits are needed.
        """
        if seq.block_table:
            raise ValueError(f"{seq.request_id} already has blocks")
        if not self.can_allocate(seq):
            raise RuntimeError(f"not enough free blocks for {seq.request_id}: call can_allocate first")
        previous, hits_possible = None, self.enable_prefix_caching
        for i in range(seq.num_blocks(self.block_size)):
            tokens = seq.block_tokens(i, self.block_size)
            full = len(tokens) == self.block_size
            h = block_hash(tokens, previous) if full else None
            reusable = hits_possible and full and (i + 1) * self.block_size < len(seq)
            hit = self.cached.get(h) if reusable else None
            if hit is not None and self.blocks[hit].token_ids == tokens:
                block = self.blocks[hit]
                if block.ref_count == 0:
                    self.free_block_ids.remove(hit)
                block.ref_count += 1
                seq.num_cached_tokens += self.block_size
            else:
                hits_possible = False  # after one miss, later blocks cannot be shared prefixes
                block = self._take_free_block()
                if full:
                    self._seal(block, tokens, previous, computed=False)  # reusable after mark_computed
            seq.block_table.append(block.block_id)
            previous = h
        seq.num_computed_tokens = seq.num_cached_tokens

    def free(self, seq: Sequence) -> None:
        """Return a sequence's blocks (finished, aborted or preempted); shared blocks stay in use."""
        self._release(seq.block_table)
        seq.block_table = []
        seq.num_cached_tokens = seq.num_computed_tokens = 0

    def can_append(self, seq: Sequence) -> bool:
        """Whether the token just appended to ``seq`` has a slot, or a free block can give it one."""
        return (len(seq) - 1) // self.block_size < len(seq.block_table) or self.num_free_blocks > 0

    def append_slot(self, seq: Sequence) -> None:
        """Make room for the token just appended to ``seq`` (at position ``len(seq) - 1``).

        Every block before the one holding that token is full and all its keys and values are
        computed, so any not yet sealed is sealed now (hashed for prefix reuse, in order, since
        each hash chains the one before). A block is taken from the free list when the token
        starts a new one.
        """
        position = len(seq) - 1
        i = position // self.block_size
        if self.enable_prefix_caching:  # (without it nothing is ever sealed)
            first_open = i
            while first_open > 0 and self.blocks[seq.block_table[first_open - 1]].hash is None:
                first_open -= 1
            for j in range(first_open, i):
                previous = self.blocks[seq.block_table[j - 1]].hash if j >= 1 else None
                self._seal(self.blocks[seq.block_table[j]], seq.block_tokens(j, self.block_size), previous)
        if i < len(seq.block_table):
            return
        if not self.free_block_ids:
            raise RuntimeError(f"no free block for {seq.request_id}: call can_append first")
        seq.block_table.append(self._take_free_block().block_id)

    def can_fork(self, parent: Sequence) -> bool:
        """Whether :meth:`fork` has the one free block it may need (for a partly filled last block)."""
        return len(parent) % self.block_size == 0 or self.num_free_blocks > 0

    def fork(self, parent: Sequence, child: Sequence) -> tuple[int, int] | None:
        """Give ``child`` the blocks of ``parent``'s tokens, all of them computed.

        Full blocks are shared (their reference count goes up): no sequence writes into a full
        block again. A last, partly filled block is about to receive each one's next token, so
        the child gets a fresh block for it instead: the returned ``(source, destination)`` pair
        is whose keys and values the caller must copy (None when every block is full).
        """
        if child.block_table:
            raise ValueError(f"{child.request_id} already has blocks")
        if not self.can_fork(parent):
            raise RuntimeError(f"no free block to fork {parent.request_id}: call can_fork first")
        full = len(parent) // self.block_size
        for block_id in parent.block_table[:full]:
            self.blocks[block_id].ref_count += 1
        child.block_table = parent.block_table[:full]
        child.num_cached_tokens, child.num_computed_tokens = parent.num_cached_tokens, len(parent)
        if len(parent) % self.block_size == 0:
            return None
        child.block_table.append(self._take_free_block().block_id)
        return parent.block_table[full], child.block_table[-1]

    def reserve(self, seq: Sequence, num_tokens: int) -> bool:
        """Give ``seq`` slots for ``num_tokens`` tokens (speculative drafts beyond its own tokens) if
        enough blocks are free; False, and nothing taken, if not. :meth:`trim` gives back what is unused."""
        missing = -(-num_tokens // self.block_size) - len(seq.block_table)
        if missing > self.num_free_blocks:
            return False
        for _ in range(max(0, missing)):
            seq.block_table.append(self._take_free_block().block_id)
        return True

    def trim(self, seq: Sequence) -> None:
        """Free the blocks past the one holding ``seq``'s last token (slots reserved for drafts
        that were rejected: their keys and values are simply forgotten)."""
        keep = seq.num_blocks(self.block_size)
        self._release(seq.block_table[keep:])
        del seq.block_table[keep:]

    def _release(self, block_ids: list[int]) -> None:
        for block_id in reversed(block_ids):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_block_ids.append(block_id)  # keeps its hash: reusable until overwritten

    def slot(self, seq: Sequence, position: int) -> int:
        """Index of token ``position``'s slot in the flat pool of num_blocks * block_size slots."""
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size
