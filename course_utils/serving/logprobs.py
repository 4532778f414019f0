"""Log-probabilities of the tokens a request generated, and of the most likely alternatives.

What a client asking for ``logprobs`` gets, in vLLM's shape: for each output token a dict
``{token_id: Logprob}`` holding the chosen token and the ``k`` most likely ones. They are the
model's own distribution, ``log_softmax`` of the raw logits, before temperature, penalties and
top-k/top-p change what is drawn from (vLLM's default ``raw_logprobs``, and what OpenAI reports):
a sampled token may therefore be far from rank 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Logprob", "token_bytes_table", "token_logprobs"]


@dataclass(frozen=True)
class Logprob:
    logprob: float
    rank: int  # 1 for the most likely token
    decoded_token: str | None = None  # the token's text on its own


def token_logprobs(logits: torch.Tensor, tokens: list[int], k: int, decode=None) -> list[dict[int, Logprob]]:
    """(T, V) next-token logits and the T tokens chosen from them -> for each step, the chosen token's
    and the ``k`` most likely tokens' log-probabilities (the chosen one first; it may be among the k).

    ``decode(token_id) -> str`` fills ``decoded_token`` when given.
    """
    if logits.ndim != 2 or logits.shape[0] != len(tokens):
        raise ValueError(f"need one row of logits per token, got {tuple(logits.shape)} for {len(tokens)} tokens")
    logp = torch.log_softmax(logits.double(), dim=-1)
    chosen_ids = torch.tensor(tokens, dtype=torch.long, device=logp.device)
    chosen = logp.gather(1, chosen_ids[:, None])  # (T, 1)
    ranks = ((logp > chosen).sum(-1) + 1).tolist()
    top_values, top_ids = torch.topk(logp, min(k, logp.shape[-1]), dim=-1)
    out = []
    for t, token in enumerate(tokens):
        entry = {token: Logprob(float(chosen[t, 0]), ranks[t], decode(token) if decode else None)}
        for rank, (value, token_id) in enumerate(zip(top_values[t].tolist(), top_ids[t].tolist(), strict=True), 1):
            if token_id not in entry:
                entry[token_id] = Logprob(value, rank, decode(token_id) if decode else None)
        out.append(entry)
    return out


def token_bytes_table(tokenizer) -> list[bytes]:
    """The UTF-8 bytes of every token id on its own (index = id), for OpenAI's ``bytes`` field.

    A byte-level BPE token (GPT-2's scheme, SmolLM2's and Llama 3's) may hold half of a multi-byte
    character, which has no text of its own: its bytes are read back through the tokenizer's
    byte-to-character map, so the bytes of a reply's tokens, joined, are exactly the reply's bytes.
    Tokens outside that map (special tokens of other schemes) fall back to their decoded text.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    char_to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    table = []
    for token_id, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if piece is not None and all(char in char_to_byte for char in piece):
            table.append(bytes(char_to_byte[char] for char in piece))
        else:
            table.append(tokenizer.decode([token_id]).encode())
    return table
