"""A small, deterministic trainer for tiny decoders: the experiments of the scaling chapter.

The corpus is the Python standard library's own source code: present on every machine with
Python, no network needed, about 13 MB of real text. Tokens are bytes (a 256-entry vocabulary),
so the embedding stays small and every model size spends its parameters on transformer blocks.
Whole files are assigned to the held-out split by a hash of their path, so no file is in both.

The model is chapter 1's :class:`course_utils.architecture.transformer.Llama`; training is AdamW with linear
warm-up and cosine decay, seeded end to end, with token and FLOP accounting: C = 6 N D with N every
parameter, the (tied) embedding included, as Hoffmann et al. count it. With a 256-byte vocabulary
the output layer is a large share of a tiny model's compute, so leaving it out (as Kaplan et al.
did for large models) would make the small models look cheaper than they are.

:func:`train_many` runs several configurations in worker processes, one thread each: tiny models
are limited by per-operation overhead rather than arithmetic, so two single-threaded runs side by
side finish sooner than one after the other with two threads each (benchmarks/training_bench.py
measures by how much). Results do not depend on the number of workers.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import hashlib
import math
import multiprocessing
import signal
import sysconfig
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from course_utils.architecture.transformer import Llama, LlamaConfig

__all__ = [
    "Corpus", "SourceFile", "TrainConfig", "TrainResult", "evaluate", "model_ladder", "stdlib_corpus", "stdlib_files",
    "train", "train_many",
]

VOCAB = 256  # bytes


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # (n_train,) uint8 byte values
    held_out: torch.Tensor  # (n_held_out,)
    files: int

    @classmethod
    def from_bytes(cls, train: bytes, held_out: bytes) -> Corpus:
        """A corpus from raw text, e.g. a synthetic task or a deliberately duplicated training set."""
        if len(train) < 2 or len(held_out) < 2:
            raise ValueError("both splits need at least 2 bytes of text")
        return cls(_tensor(train), _tensor(held_out), 0)


def _tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the standard library's root
    text: bytes
    held_out: bool


@functools.lru_cache(maxsize=2)
def stdlib_files(held_out_fraction: float = 0.05, max_bytes: int | None = None) -> tuple[SourceFile, ...]:
    """Every ``.py`` file of the standard library (tests excluded), assigned to a split by path hash.

    Read once per process: the corpus and the data-quality experiments share it.
    """
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    root = Path(sysconfig.get_paths()["stdlib"])
    files, total = [], 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("test/", "idlelib/idle_test/", "site-packages/")) or "/tests/" in rel:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        bucket = int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        files.append(SourceFile(rel, data, bucket < held_out_fraction))
        total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    return tuple(files)


@functools.lru_cache(maxsize=2)
def stdlib_corpus(held_out_fraction: float = 0.05, max_bytes: int | None = None) -> Corpus:
    """The standard library's source as one training and one held-out byte stream (see stdlib_files)."""
    files = stdlib_files(held_out_fraction, max_bytes)
    return Corpus(_tensor(b"".join(f.text for f in files if not f.held_out)),
                  _tensor(b"".join(f.text for f in files if f.held_out)), len(files))


@dataclass(frozen=True)
class TrainConfig:
    dim: int = 32
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 4
    ffn_mult: float = 8 / 3  # SwiGLU width as a multiple of dim
    seq_len: int = 64
    batch_size: int = 8
    tokens: int = 200_000  # D: training tokens
    lr: float = 1e-2
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

    @property
    def n_params(self) -> int:
        """Every parameter of the model this config builds, the tied embedding counted once.

        Counted on a model built on the "meta" device: shapes only, no memory, no arithmetic.
        """
        with torch.device("meta"):
            return sum(p.numel() for p in Llama(self.model_config()).parameters())

    def with_budget(self, flops: float) -> TrainConfig:
        """This model trained on D = C / (6 N) tokens: one point of an IsoFLOP curve."""
        return dataclasses.replace(self, tokens=int(flops / (6 * self.n_params)))


def model_ladder(dims: Sequence[int], n_layers: int = 2, head_dim: int = 8, **overrides) -> list[TrainConfig]:
    """Configs of growing width with a fixed depth and head size (MHA), smallest first."""
    return [TrainConfig(dim=d, n_layers=n_layers, n_heads=max(1, d // head_dim), n_kv_heads=max(1, d // head_dim),
                        **overrides) for d in sorted(dims)]


@dataclass
class TrainResult:
    config: TrainConfig
    n_params: int  # all parameters, the tied embedding once
    tokens_seen: int
    flops: float  # 6 N D
    held_out_loss: float  # nats per byte
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)  # (tokens seen, training loss)
    model: Llama | None = field(default=None, repr=False, compare=False)  # the trained model, in eval mode
    probes: list[tuple[int, dict]] = field(default_factory=list, repr=False)  # (tokens seen, probe(model))


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


def train(cfg: TrainConfig, corpus: Corpus | None = None, progress: bool = True,
          probe: Callable[[Llama], dict] | None = None, probe_points: int = 20) -> TrainResult:
    """Train one tiny decoder from scratch; returns its held-out loss, training history and the model.

    ``probe``, if given, is called with the model before training and at ``probe_points`` evenly
    spaced steps (under ``torch.no_grad``); its results land in ``TrainResult.probes``. Use it to
    watch something change during training, such as in-context learning appearing.
    """
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
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95),
                            fused=True)  # one kernel per step instead of one per tensor: tiny models are overhead-bound
    warmup = max(1, int(cfg.warmup_fraction * cfg.steps))

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        progress_frac = (step - warmup) / max(1, cfg.steps - warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac)))  # decays to 10%

    history, probes, start = [], [], time.perf_counter()
    tokens_per_step = cfg.seq_len * cfg.batch_size
    probe_at = {round(i * cfg.steps / probe_points) for i in range(1, probe_points + 1)} if probe else set()
    if probe:
        with torch.no_grad():
            probes.append((0, probe(model)))
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
        if step + 1 in probe_at:
            with torch.no_grad():
                probes.append(((step + 1) * tokens_per_step, probe(model)))
    model.eval()
    tokens_seen = cfg.steps * tokens_per_step
    return TrainResult(cfg, n_params, tokens_seen, 6.0 * n_params * tokens_seen,
                       evaluate(model, corpus.held_out, cfg), time.perf_counter() - start, history, model, probes)


def _train_one_thread(cfg: TrainConfig, corpus: Corpus | None) -> TrainResult:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(cfg, corpus, progress=False)
    finally:
        torch.set_num_threads(threads)


def train_many(configs: Sequence[TrainConfig], corpus: Corpus | Sequence[Corpus] | None = None, workers: int = 2,
               progress: bool = True) -> list[TrainResult]:
    """Train every config (each on one thread) in ``workers`` processes; results in input order.

    ``corpus`` is one corpus for all runs or one per config. The longest runs start first so the
    workers finish together (a step of a tiny model costs a fixed overhead, worth about 30K
    parameters, plus a part proportional to its size). The worker processes stay up for the next
    call. ``workers=1`` trains in this process and gives identical results.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    from tqdm.auto import tqdm

    configs = list(configs)
    corpora = list(corpus) if isinstance(corpus, Sequence) else [corpus] * len(configs)
    if len(corpora) != len(configs):
        raise ValueError(f"got {len(corpora)} corpora for {len(configs)} configs; pass one, or one per config")
    order = sorted(range(len(configs)), key=lambda i: -configs[i].steps * (configs[i].n_params + 30_000))
    results: list[TrainResult | None] = [None] * len(configs)
    bar = tqdm(total=len(configs), desc="training runs", disable=not progress)
    if workers == 1:
        for i in order:
            results[i] = _train_one_thread(configs[i], corpora[i])
            bar.update()
    else:
        pool = _pool(workers)
        futures = {pool.submit(_train_one_thread, configs[i], corpora[i]): i for i in order}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
        except KeyboardInterrupt:  # runs not yet started are dropped; the running ones finish
            for future in futures:
                future.cancel()
            raise
    bar.close()
    return results


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C (and a Jupyter kernel's interrupt) to the parent, which shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@functools.lru_cache(maxsize=1)
def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes kept for the next call: starting one costs seconds (it imports torch)."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_interrupts)
    atexit.register(pool.shutdown, cancel_futures=True)
    return pool
