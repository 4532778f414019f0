"""Running the model on a batch of sequences whose keys and values live in a paged pool.

Each engine step is either a *prefill* (new prompts: every uncached prompt token is computed)
or a *decode* (one new token for each running sequence). The tokens of all sequences in the step
are packed into one row, so every weight matrix is read once per step for the whole batch; only
attention needs to know which tokens belong together, and :class:`PagedKVCache` answers that
through the block tables:

* the keys and values of the step's tokens are written to their slots in the pool;
* each sequence attends over its own context, gathered slot by slot from its blocks. A decode
  step gathers all sequences at once, padded to the longest and masked; a prefill step goes
  sequence by sequence (causal within the new tokens, after any cached prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from course_utils.attention import repeat_kv
from course_utils.serving.block_manager import BlockManager
from course_utils.serving.sequence import Sequence
from course_utils.transformer import Llama

__all__ = ["ModelRunner", "PagedKVCache", "StepBatch"]


@dataclass
class StepBatch:
    """What one forward pass needs to know, built from the scheduled sequences.

    ids, positions, slots: (N,) for the N packed new tokens; ``spans[i]`` is sequence i's
    (start, end) range within them; ``context_slots[i]`` holds the slots of all its tokens
    (cached and new, in order); ``last`` (S,) indexes each sequence's last new token.
    """

    ids: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    spans: list[tuple[int, int]]
    context_slots: list[torch.Tensor]
    last: torch.Tensor
    is_prefill: bool

    @classmethod
    def build(cls, seqs: list[Sequence], manager: BlockManager, is_prefill: bool, device) -> StepBatch:
        ids, positions, slots, spans, context = [], [], [], [], []
        for seq in seqs:
            start, tokens = seq.num_computed_tokens, seq.token_ids
            new = range(start, len(tokens))
            spans.append((len(ids), len(ids) + len(new)))
            ids += tokens[start:]
            positions += list(new)
            slots += [manager.slot(seq, p) for p in new]
            context.append(torch.tensor([manager.slot(seq, p) for p in range(len(tokens))], device=device))
        last = [end - 1 for _, end in spans]
        ids, positions, slots, last = (torch.tensor(x, dtype=torch.long, device=device)
                                       for x in (ids, positions, slots, last))
        return cls(ids, positions, slots, spans, context, last, is_prefill)


class PagedKVCache:
    """The KV pool: k, v of shape (n_layers, num_blocks * block_size, n_kv_heads, head_dim)."""

    def __init__(self, model: Llama, num_blocks: int, block_size: int, dtype=None, device=None):
        c = model.config
        shape = (c.n_layers, num_blocks * block_size, c.n_kv_heads, c.head_dim)
        dtype = dtype or model.embed_tokens.weight.dtype
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.batch: StepBatch | None = None

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def advance(self, n: int) -> None:
        """Positions come from the block tables, not from a running length: nothing to do."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention) -> torch.Tensor:
        """q (1, H, N, hd), k and v (1, H_kv, N, hd) for the packed tokens -> (1, H, N, hd)."""
        b = self.batch
        self.k[layer, b.slots] = k[0].transpose(0, 1)  # (N, H_kv, hd)
        self.v[layer, b.slots] = v[0].transpose(0, 1)
        if not b.is_prefill:
            return self._decode_attention(layer, q)
        out = []
        for (start, end), context in zip(b.spans, b.context_slots, strict=True):
            keys = self.k[layer, context].transpose(0, 1)[None]  # (1, H_kv, L, hd)
            values = self.v[layer, context].transpose(0, 1)[None]
            out.append(attention(q[:, :, start:end], keys, values, causal=True))  # the new tokens are the last
        return torch.cat(out, dim=2)

    def _decode_attention(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """One query per sequence: gather all contexts, padded to the longest, in one call."""
        contexts = self.batch.context_slots
        lengths = torch.tensor([len(c) for c in contexts], device=q.device)
        padded = torch.nn.utils.rnn.pad_sequence(contexts, batch_first=True)  # (S, L_max), pads point at slot 0
        keys = self.k[layer, padded].permute(0, 2, 1, 3)  # (S, H_kv, L_max, hd)
        values = self.v[layer, padded].permute(0, 2, 1, 3)
        n_rep = q.shape[1] // keys.shape[1]
        keys, values = repeat_kv(keys, n_rep), repeat_kv(values, n_rep)
        mask = (torch.arange(padded.shape[1], device=q.device)[None] < lengths[:, None])[:, None, None]  # (S,1,1,L)
        queries = q[0].transpose(0, 1)[:, :, None]  # (S, H, 1, hd)
        y = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)  # (S, H, 1, hd)
        return y[:, :, 0].transpose(0, 1)[None]  # (1, H, S, hd)


class ModelRunner:
    """Owns the model and the KV pool; turns a scheduled batch into next-token logits."""

    def __init__(self, model: Llama, num_blocks: int, block_size: int):
        self.model = model
        self.device = model.embed_tokens.weight.device
        self.cache = PagedKVCache(model, num_blocks, block_size, device=self.device)

    @torch.inference_mode()
    def run(self, seqs: list[Sequence], manager: BlockManager, is_prefill: bool) -> torch.Tensor:
        """Logits (S, V) for the next token of each of the S sequences."""
        batch = StepBatch.build(seqs, manager, is_prefill, self.device)
        self.cache.batch = batch
        try:
            logits = self.model(batch.ids[None], self.cache, positions=batch.positions, logits_at=batch.last)
        finally:
            self.cache.batch = None
        return logits[0].float()
