"""Running the model on a batch of sequences whose keys and values live in a paged pool.

Each engine step carries *decode* tokens (one new token for each running sequence) and
*prefills* (new prompts: every uncached prompt token is computed). The tokens of all sequences in the step
are packed into one row, so every weight matrix is read once per step for the whole batch; only
attention needs to know which tokens belong together, and :class:`PagedKVCache` answers that
through the block tables:

* the keys and values of the step's tokens are written to their slots in the pool;
* each sequence attends over its own context, gathered block by block through its block table.
  The decoding sequences attend in one call, padded to the longest and masked; prefills go
  sequence by sequence (causal within the new tokens, after any cached prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from course_utils.serving.block_manager import BlockManager
from course_utils.serving.sequence import Sequence
from course_utils.transformer import Llama

__all__ = ["ModelRunner", "PagedKVCache", "StepBatch"]


@dataclass
class StepBatch:
    """What one forward pass needs to know, built from the scheduled sequences.

    ids, positions, slots: (N,) for the N packed new tokens; ``spans[i]`` is sequence i's
    (start, end) range within them; ``block_tables`` (S, max_blocks) lists each sequence's
    blocks (padded with block 0) and ``context_lens`` (S,) how many of their slots hold its
    tokens, cached and new; ``last`` (S,) indexes each sequence's last new token. The first
    ``num_decode`` sequences decode one token each; the rest are prefills.
    """

    ids: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    spans: list[tuple[int, int]]
    block_tables: torch.Tensor
    context_lens: torch.Tensor
    last: torch.Tensor
    num_decode: int

    @classmethod
    def build(cls, seqs: list[Sequence], manager: BlockManager, num_decode: int, device) -> StepBatch:
        ids, positions, slots, spans = [], [], [], []
        for seq in seqs:
            start, tokens = seq.num_computed_tokens, seq.token_ids
            new = range(start, len(tokens))
            spans.append((len(ids), len(ids) + len(new)))
            ids += tokens[start:]
            positions += list(new)
            slots += [manager.slot(seq, p) for p in new]
        width = max(len(seq.block_table) for seq in seqs)
        tables = [seq.block_table + [0] * (width - len(seq.block_table)) for seq in seqs]
        ids, positions, slots, tables, lens, last = (
            torch.tensor(x, dtype=torch.long, device=device)
            for x in (ids, positions, slots, tables, [len(seq) for seq in seqs], [end - 1 for _, end in spans]))
        return cls(ids, positions, slots, spans, tables, lens, last, num_decode)


class PagedKVCache:
    """The KV pool: k, v of shape (n_layers, num_blocks * block_size, n_kv_heads, head_dim)."""

    def __init__(self, model: Llama, num_blocks: int, block_size: int, dtype=None, device=None):
        c = model.config
        shape = (c.n_layers, num_blocks * block_size, c.n_kv_heads, c.head_dim)
        dtype = dtype or model.embed_tokens.weight.dtype
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self.batch: StepBatch | None = None

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def advance(self, n: int) -> None:
        """Positions come from the block tables, not from a running length: nothing to do."""

    def _gather(self, pool: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """(S, max_blocks) block tables -> (S, max_blocks * block_size, H_kv, hd), whole blocks at a time."""
        blocks = pool.view(-1, self.block_size, *pool.shape[1:])[tables]  # (S, max_blocks, block, H_kv, hd)
        return blocks.flatten(1, 2)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention) -> torch.Tensor:
        """q (1, H, N, hd), k and v (1, H_kv, N, hd) for the packed tokens -> (1, H, N, hd)."""
        b = self.batch
        self.k[layer, b.slots] = k[0].transpose(0, 1)  # (N, H_kv, hd)
        self.v[layer, b.slots] = v[0].transpose(0, 1)
        keys = self._gather(self.k[layer], b.block_tables).transpose(1, 2)  # (S, H_kv, L_max, hd)
        values = self._gather(self.v[layer], b.block_tables).transpose(1, 2)
        out, d = [], b.num_decode
        if d:  # one query per decoding sequence: all of them in one call, padding masked
            mask = (torch.arange(keys.shape[2], device=q.device)[None] < b.context_lens[:d, None])[:, None, None]
            queries = q[0, :, :d].transpose(0, 1)[:, :, None]  # (d, H, 1, hd)
            y = F.scaled_dot_product_attention(queries, keys[:d], values[:d], attn_mask=mask, enable_gqa=True)
            out.append(y[:, :, 0].transpose(0, 1)[None])  # (1, H, d, hd)
        for i in range(d, len(b.spans)):  # prefills: causal within the new tokens, after the cached ones
            (start, end), n = b.spans[i], int(b.context_lens[i])
            out.append(attention(q[:, :, start:end], keys[i:i + 1, :, :n], values[i:i + 1, :, :n], causal=True))
        return torch.cat(out, dim=2)


class ModelRunner:
    """Owns the model and the KV pool; turns a scheduled batch into next-token logits."""

    def __init__(self, model: Llama, num_blocks: int, block_size: int):
        self.model = model
        self.device = model.embed_tokens.weight.device
        self.cache = PagedKVCache(model, num_blocks, block_size, device=self.device)

    @torch.inference_mode()
    def run(self, seqs: list[Sequence], manager: BlockManager, num_decode: int) -> torch.Tensor:
        """Logits (S, V) for the next token of each of the S sequences (the first num_decode decode)."""
        batch = StepBatch.build(seqs, manager, num_decode, self.device)
        self.cache.batch = batch
        try:
            logits = self.model(batch.ids[None], self.cache, positions=batch.positions, logits_at=batch.last)
        finally:
            self.cache.batch = None
        return logits[0].float()
