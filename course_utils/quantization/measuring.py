"""One loop that measures every scheme the same way: quality, size and time, against the float baseline.

Notebook 05 and ``benchmarks/quant_bench.py`` both call :func:`measure_schemes`, so their tables
have the same columns and mean the same thing:

* ``perplexity`` on held-out passages (each its own sequence) and ``increase`` over the baseline
  (a fraction: 0.01 is 1%); ``passage_nll``, each passage's mean negative log-likelihood per token,
  so that two schemes can be compared passage by passage (a paired test) and the increase given an
  interval over passages;
* ``linear_bits_per_weight``: stored bits per weight of the quantized layers, scales included;
* ``model_mb``: every parameter and buffer of the model, in MB;
* ``quantize_s``: seconds to quantize the whole model (GPTQ's calibration included).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from course_utils.evaluation import perplexity_of, sequence_nlls
from course_utils.quantization.model import linear_bits_per_weight, model_bytes, quantize_model
from course_utils.quantization.schemes import SCHEMES, get_scheme

__all__ = ["BASELINE", "display_rows", "measure_scheme", "measure_schemes"]

BASELINE = "float (as loaded)"


def _quality(model: nn.Module, texts: Sequence[torch.Tensor]) -> tuple[float, list[float]]:
    """(perplexity over all of ``texts``, each text's mean negative log-likelihood per token)."""
    nlls = sequence_nlls(model, texts)
    return perplexity_of(nlls), [total / count for total, count in nlls]


def _row(scheme: str, model: nn.Module, quality: tuple[float, list[float]], base_ppl: float, bits: float,
         seconds: float) -> dict:
    ppl, passage_nll = quality
    return {"scheme": scheme, "linear_bits_per_weight": bits, "model_mb": model_bytes(model) / 1e6,
            "perplexity": ppl, "increase": ppl / base_ppl - 1, "quantize_s": seconds, "passage_nll": passage_nll}


def measure_scheme(model: nn.Module, scheme: str, texts: Sequence[torch.Tensor], base_ppl: float,
                   calibration: torch.Tensor | None = None) -> dict:
    """Quantize a copy of ``model`` with ``scheme`` and measure it on ``texts`` ((T,) id tensors)."""
    get_scheme(scheme)  # unknown names fail before the copy
    quantized = copy.deepcopy(model)
    start = time.perf_counter()
    quantize_model(quantized, scheme, calibration=calibration)
    seconds = time.perf_counter() - start
    return _row(scheme, quantized, _quality(quantized, texts), base_ppl, linear_bits_per_weight(quantized), seconds)


def measure_schemes(model: nn.Module, texts: Sequence[torch.Tensor], calibration: torch.Tensor | None = None,
                    schemes: Iterable[str] | None = None, progress: bool = True) -> list[dict]:
    """The baseline row (``model`` as it is) then one row per scheme (default: all of :data:`SCHEMES`).

    ``calibration`` (batch, length) ids are needed only by schemes that calibrate (GPTQ). The model
    itself is never modified.
    """
    names = list(SCHEMES if schemes is None else schemes)
    for name in names:
        get_scheme(name)
    if calibration is None and any(get_scheme(n).needs_calibration for n in names):
        raise ValueError("GPTQ needs calibration ids: pass calibration=calibration_batch(tokenizer)")
    base = _quality(model, texts)
    bits = 8.0 * next(model.parameters()).element_size()
    rows = [_row(BASELINE, model, base, base[0], bits, 0.0)]
    for name in tqdm(names, desc="schemes", disable=not progress):
        rows.append(measure_scheme(model, name, texts, base[0], calibration))
    return rows


def display_rows(rows: Sequence[dict]) -> list[dict]:
    """:func:`measure_schemes`' rows rounded for a table, the increase as a percentage."""
    return [{"scheme": r["scheme"], "bits/weight": round(r["linear_bits_per_weight"], 3),
             "model MB": round(r["model_mb"], 1), "perplexity": round(r["perplexity"], 3),
             "increase %": round(100 * r["increase"], 2), "quantize s": round(r["quantize_s"], 1)} for r in rows]
