"""Running the model on a batch of sequences whose keys and values live in a paged pool.

Each engine step carries *decode* tokens (one new token for each running sequence) and
*prefills* (a prompt's uncached tokens, all of them or the step's chunk of them). The tokens
of all sequences in the step are packed into one row, so every weight matrix is read once per
step for the whole batch; only attention needs to know which tokens belong together, and
:class:`PagedKVCache` answers that through the block tables:

* the keys and values of the step's tokens are written to their slots in the pool;
* decoding sequences attend in one call of a compiled kernel that reads their keys and values in
  place through the block tables (:mod:`~course_utils.serving.paged_kernel`; on the CPU, where a
  C compiler is found). Without it, each sequence's blocks are gathered into a contiguous copy
  and the sequences attend in a few calls, each for a group of sequences of similar length
  padded to the longest of its group and masked (one call for all would pad every short
  sequence to the longest one, and attention's cost grows with the padded length);
* prefills attend sequence by sequence over a gathered copy (causal within the new tokens, after
  any cached prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from course_utils.architecture.transformer import Llama
from course_utils.serving.block_manager import BlockManager
from course_utils.serving.fused_model import FusedLlama
from course_utils.serving.paged_kernel import load_kernel, paged_decode_attention
from course_utils.serving.prepacked import can_prepack, prepacked_copy
from course_utils.serving.sequence import Sequence

__all__ = ["DecodeGroup", "ModelRunner", "PagedKVCache", "StepBatch"]

ATTENTION_SCOPE = "paged_attention"  # the profiler label of the attention work (see step_profile)
MAX_DECODE_GROUPS = 4  # more groups pad less, but each costs a gather and an attention call per layer
MIN_GROUP_SIZE = 4  # fewer sequences than this share one group: a call per pair would cost more than padding


@dataclass
class DecodeGroup:
    """Decoding sequences of similar length that attend in one call.

    rows: (n,) their indices among the step's sequences; block_tables: (n, max_blocks) cut to
    the group's longest; mask: (n, 1, 1, max_blocks * block_size), True on each one's tokens.
    """

    rows: torch.Tensor
    block_tables: torch.Tensor
    mask: torch.Tensor


def decode_groups(seqs: list[Sequence], num_decode: int, block_size: int, device) -> list[DecodeGroup]:
    """The first ``num_decode`` sequences, sorted by length and cut into up to MAX_DECODE_GROUPS
    groups of (nearly) equal size, each of at least MIN_GROUP_SIZE sequences when there are enough."""
    order = sorted(range(num_decode), key=lambda i: len(seqs[i]))
    n_groups = min(MAX_DECODE_GROUPS, -(-num_decode // MIN_GROUP_SIZE))
    groups = []
    for g in range(n_groups):
        rows = order[g * num_decode // n_groups:(g + 1) * num_decode // n_groups]
        width = max(len(seqs[i].block_table) for i in rows)
        tables = torch.tensor([seqs[i].block_table + [0] * (width - len(seqs[i].block_table)) for i in rows],
                              dtype=torch.long, device=device)
        lens = torch.tensor([len(seqs[i]) for i in rows], device=device)
        mask = (torch.arange(width * block_size, device=device)[None] < lens[:, None])[:, None, None]
        groups.append(DecodeGroup(torch.tensor(rows, device=device), tables, mask))
    return groups


@dataclass
class StepBatch:
    """What one forward pass needs to know, built from the scheduled sequences.

    ids, positions, slots: (N,) for the N packed new tokens (sequence i contributes its
    ``num_new_tokens`` after its ``num_computed_tokens``); ``spans[i]`` is sequence i's
    (start, end) range within them; ``block_tables`` (S, max_blocks) lists each sequence's
    blocks (padded with block 0) and ``context_lens`` (S,) how many of their slots hold its
    tokens, cached and new; ``logits_at`` (R,) indexes the tokens whose next-token logits are
    wanted: each sequence's last new token, and for a sequence checking speculative drafts also
    the tokens before it, one per draft (``num_logits[i]`` of them for sequence i). The first
    ``num_decode`` sequences decode one token each, attending in ``groups`` where the runner
    gathers blocks (none where the kernel reads them in place); the rest are prefills.
    """

    ids: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    spans: list[tuple[int, int]]
    block_tables: torch.Tensor
    context_lens: torch.Tensor
    logits_at: torch.Tensor
    num_logits: list[int]
    num_decode: int
    groups: list[DecodeGroup]

    @classmethod
    def build(cls, seqs: list[Sequence], manager: BlockManager, num_decode: int, device,
              grouped: bool = True) -> StepBatch:
        ids, positions, slots, spans = [], [], [], []
        for seq in seqs:
            start = seq.num_computed_tokens
            new = range(start, start + seq.num_new_tokens)
            spans.append((len(ids), len(ids) + len(new)))
            ids += (seq.token_ids + seq.draft_token_ids)[new.start:new.stop]
            positions += list(new)
            slots += [manager.slot(seq, p) for p in new]
        width = max(len(seq.block_table) for seq in seqs)
        tables = [seq.block_table + [0] * (width - len(seq.block_table)) for seq in seqs]
        lens = [seq.num_computed_tokens + seq.num_new_tokens for seq in seqs]
        num_logits = [1 + len(seq.draft_token_ids) for seq in seqs]
        logits_at = [i for (_, end), n in zip(spans, num_logits, strict=True) for i in range(end - n, end)]
        ids, positions, slots, tables, lens, logits_at = (
            torch.tensor(x, dtype=torch.long, device=device)
            for x in (ids, positions, slots, tables, lens, logits_at))
        groups = decode_groups(seqs, num_decode, manager.block_size, device) if grouped else []
        return cls(ids, positions, slots, spans, tables, lens, logits_at, num_logits, num_decode, groups)


class PagedKVCache:
    """The KV pool: k, v of shape (n_layers, num_blocks * block_size, n_kv_heads, head_dim).

    ``decode_kernel``: decode attention reads the pool in place through the compiled kernel
    where it can (float32 on the CPU, the kernel built); otherwise, or with False, it gathers.
    ``in_place`` says which; it may be switched off between steps (the benchmark alternates).
    """

    def __init__(self, model: Llama, num_blocks: int, block_size: int, dtype=None, device=None,
                 decode_kernel: bool = True):
        c = model.config
        shape = (c.n_layers, num_blocks * block_size, c.n_kv_heads, c.head_dim)
        dtype = dtype or model.embed_tokens.weight.dtype
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self.batch: StepBatch | None = None
        self.label_attention = False  # True while step_profile runs: the label costs microseconds per layer
        self.in_place = (decode_kernel and self.k.device.type == "cpu" and dtype == torch.float32
                         and load_kernel() is not None)

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def copy_block(self, source: int, destination: int) -> None:
        """Copy one block's keys and values, in every layer, to another block (a forked sequence's own copy)."""
        for pool in (self.k, self.v):
            blocks = pool.view(pool.shape[0], -1, self.block_size, *pool.shape[2:])  # (L, num_blocks, block, H_kv, hd)
            blocks[:, destination] = blocks[:, source]

    def advance(self, n: int) -> None:
        """Positions come from the block tables, not from a running length: nothing to do."""

    def _gather(self, pool: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """(S, max_blocks) block tables -> (S, max_blocks * block_size, H_kv, hd), whole blocks at a time."""
        blocks = pool.view(-1, self.block_size, *pool.shape[1:])  # (num_blocks, block, H_kv, hd)
        # index_select copies whole rows; on CPU it is several times faster than blocks[tables]
        return torch.index_select(blocks, 0, tables.flatten()).view(*tables.shape[:1], -1, *pool.shape[1:])

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention) -> torch.Tensor:
        """q (1, H, N, hd), k and v (1, H_kv, N, hd) for the packed tokens -> (1, H, N, hd)."""
        if not self.label_attention:
            return self._attend(layer, q, k, v, attention)
        with torch.profiler.record_function(ATTENTION_SCOPE):  # step_profile sorts its time as attention
            return self._attend(layer, q, k, v, attention)

    def _attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention) -> torch.Tensor:
        b = self.batch
        self.k[layer].index_copy_(0, b.slots, k[0].transpose(0, 1))  # (N, H_kv, hd) into their slots
        self.v[layer].index_copy_(0, b.slots, v[0].transpose(0, 1))
        out, d = [], b.num_decode
        if d and self.in_place:  # one call for every decoding sequence, blocks read where they lie
            queries = q[0, :, :d].transpose(0, 1)  # (d, H, hd)
            y = paged_decode_attention(queries, self.k[layer], self.v[layer], b.block_tables[:d], b.context_lens[:d],
                                       self.block_size)
            out.append(y.transpose(0, 1)[None])  # (1, H, d, hd)
        elif d:  # one query per decoding sequence, a group of sequences per call, padding masked
            # The H / H_kv query heads that share a key-value head become that head's H / H_kv
            # "query positions", so keys and values are never copied per query head.
            n_kv = k.shape[1]
            queries = q[0, :, :d].transpose(0, 1).reshape(d, n_kv, -1, q.shape[-1])  # (d, H_kv, H / H_kv, hd)
            y = torch.empty_like(queries)
            for g in b.groups:
                keys = self._gather(self.k[layer], g.block_tables).transpose(1, 2)  # (n, H_kv, L_group, hd)
                values = self._gather(self.v[layer], g.block_tables).transpose(1, 2)
                group = F.scaled_dot_product_attention(queries.index_select(0, g.rows), keys, values, attn_mask=g.mask)
                y.index_copy_(0, g.rows, group)
            out.append(y.reshape(d, -1, q.shape[-1]).transpose(0, 1)[None])  # (1, H, d, hd)
        for i in range(d, len(b.spans)):  # prefills: causal within the new tokens, after the cached ones
            (start, end), n = b.spans[i], int(b.context_lens[i])
            tables = b.block_tables[i:i + 1, :-(-n // self.block_size)]
            keys = self._gather(self.k[layer], tables).transpose(1, 2)[:, :, :n]
            values = self._gather(self.v[layer], tables).transpose(1, 2)[:, :, :n]
            out.append(attention(q[:, :, start:end], keys, values, causal=True))
        return out[0] if len(out) == 1 else torch.cat(out, dim=2)  # a decode-only step: no copy


class ModelRunner:
    """Owns the model and the KV pool; turns a scheduled batch into next-token logits.

    On the CPU the forward pass is :class:`~course_utils.serving.fused_model.FusedLlama`: the
    model's weights stacked and prepacked for oneDNN (and for MKL where it measured faster on a full
    batch), tuned for ``max_num_seqs`` rows (a model
    whose projections an adapter wraps runs as a prepacked copy instead, nothing stacked).
    """

    def __init__(self, model: Llama, num_blocks: int, block_size: int, max_num_seqs: int, decode_kernel: bool = True):
        self.model = model
        if not can_prepack(model):
            self.forward_model = model
        elif FusedLlama.supports(model):
            self.forward_model = FusedLlama(model, max_num_seqs)
        else:  # an adapter wraps some projection: pack the plain linear layers inside, stack nothing
            self.forward_model = prepacked_copy(model, max_num_seqs)
        self.device = model.embed_tokens.weight.device
        self.cache = PagedKVCache(model, num_blocks, block_size, device=self.device, decode_kernel=decode_kernel)

    @torch.inference_mode()
    def run(self, seqs: list[Sequence], manager: BlockManager, num_decode: int) -> list[torch.Tensor]:
        """Each of the S sequences' next-token logits, (1 + its number of drafts, V): at its last new
        token, preceded by those at the tokens before each draft (the first num_decode decode)."""
        batch = StepBatch.build(seqs, manager, num_decode, self.device, grouped=not self.cache.in_place)
        self.cache.batch = batch
        try:
            logits = self.forward_model(batch.ids[None], self.cache, positions=batch.positions,
                                        logits_at=batch.logits_at)
        finally:
            self.cache.batch = None
        return list(logits[0].float().split(batch.num_logits))
