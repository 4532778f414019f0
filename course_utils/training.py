"""A small, deterministic trainer for tiny decoders: the experiments of the scaling chapter.

The corpus is the Python standard library's own source code: present on every machine with
Python, no network needed, about 13 MB of real text. Tokens are bytes (a 256-entry vocabulary),
so the embedding stays small and every model size spends its parameters on transformer blocks.
Whole files are assigned to the held-out split by a hash of their path, so no file is in both.

The model is chapter 1's :class:`course_utils.transformer.Llama`; training is AdamW with linear
warm-up and cosine decay, seeded end to end, with token and FLOP accounting (C = 6 N D, with N the
non-embedding parameters as in Kaplan et al.).
"""

from __future__ import annotations

import functools
import hashlib
import math
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from course_utils.transformer import Llama, LlamaConfig

__all__ = ["Corpus", "TrainConfig", "TrainResult", "non_embedding_params", "stdlib_corpus", "train"]

VOCAB = 256  # bytes


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # (n_train,) uint8 byte values
    held_out: torch.Tensor  # (n_held_out,)
    files: int


@functools.lru_cache(maxsize=2)
def stdlib_corpus(held_out_fraction: float = 0.05, max_bytes: int | None = None) -> Corpus:
    """Every ``.py`` file of the standard library (tests excluded), split by file path hash."""
    root = Path(sysconfig.get_paths()["stdlib"])
    train_parts, held_parts, count, total = [], [], 0, 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("test/", "idlelib/idle_test/", "site-packages/")) or "/tests/" in rel:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        bucket = int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held_parts if bucket < held_out_fraction else train_parts).append(data)
        count += 1
        total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    as_tensor = lambda parts: torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8).clone()  # noqa: E731
    return Corpus(as_tensor(train_parts), as_tensor(held_parts), count)


@dataclass(frozen=True)
class TrainConfig:
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_mult: float = 8 / 3  # SwiGLU width as a multiple of dim
    seq_len: int = 128
    batch_size: int = 16
    tokens: int = 200_000  # D: training tokens
    lr: float = 3e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    eval_tokens: int = 32_768
    seed: int = 0

    def model_config(self) -> LlamaConfig:
        ffn = max(8, int(round(self.ffn_mult * self.dim / 8)) * 8)
        return LlamaConfig(vocab_size=VOCAB, dim=self.dim, n_layers=self.n_layers, n_heads=self.n_heads,
                           n_kv_heads=self.n_kv_heads, ffn_dim=ffn, tie_embeddings=True)

    @property
    def steps(self) -> int:
        return max(1, self.tokens // (self.seq_len * self.batch_size))


@dataclass
class TrainResult:
    config: TrainConfig
    n_params: int  # non-embedding
    tokens_seen: int
    flops: float  # 6 N D
    held_out_loss: float  # nats per byte
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)  # (tokens seen, training loss)


def non_embedding_params(model: Llama) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)


def _batch(data: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(data) - cfg.seq_len - 1, (cfg.batch_size,), generator=gen)
    return torch.stack([data[s: s + cfg.seq_len + 1] for s in starts.tolist()]).long()  # (B, T+1)


@torch.no_grad()
def evaluate(model: Llama, data: torch.Tensor, cfg: TrainConfig) -> float:
    """Mean next-byte loss over the first ``eval_tokens`` of ``data``, in fixed windows."""
    n_windows = max(1, min(cfg.eval_tokens, len(data) - 1) // cfg.seq_len)
    windows = data[: n_windows * cfg.seq_len + 1].long()
    inputs = windows[:-1].view(n_windows, cfg.seq_len)
    targets = windows[1:].view(n_windows, cfg.seq_len)
    losses = [F.cross_entropy(model(inputs[i:i + 64]).flatten(0, 1), targets[i:i + 64].flatten()).item()
              * len(inputs[i:i + 64]) for i in range(0, n_windows, 64)]
    return sum(losses) / n_windows


def train(cfg: TrainConfig, corpus: Corpus | None = None, progress: bool = True) -> TrainResult:
    """Train one tiny decoder from scratch; returns its held-out loss and training history."""
    if cfg.tokens < cfg.seq_len * cfg.batch_size:
        raise ValueError(f"tokens ({cfg.tokens}) must cover at least one batch ({cfg.seq_len * cfg.batch_size})")
    if not 0 <= cfg.warmup_fraction < 1:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {cfg.warmup_fraction}")
    from tqdm.auto import tqdm

    corpus = corpus or stdlib_corpus()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = Llama(cfg.model_config())
    model.init_weights()
    n_params = non_embedding_params(model)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    warmup = max(1, int(cfg.warmup_fraction * cfg.steps))

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        progress_frac = (step - warmup) / max(1, cfg.steps - warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac)))  # decays to 10%

    history, start = [], time.perf_counter()
    tokens_per_step = cfg.seq_len * cfg.batch_size
    for step in tqdm(range(cfg.steps), desc=f"N={n_params:,}", disable=not progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        batch = _batch(corpus.train, cfg, gen)
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % max(1, cfg.steps // 50) == 0 or step == cfg.steps - 1:
            history.append(((step + 1) * tokens_per_step, loss.item()))
    model.eval()
    tokens_seen = cfg.steps * tokens_per_step
    return TrainResult(cfg, n_params, tokens_seen, 6.0 * n_params * tokens_seen,
                       evaluate(model, corpus.held_out, cfg), time.perf_counter() - start, history)
