"""The model landscape as data: who makes each model, its window, whether its weights are open,
its size, and what it costs, every row dated and sourced.

``data/models.csv`` holds the facts about a model (see the data README); ``data/prices.csv``
(read through :mod:`course_utils.tokens`) holds what it costs, by tier and month. A model's size,
where its architecture is published, is also computed by :mod:`course_utils.architecture.sizing`
and the two are tested to agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from course_utils.tables import read_csv_rows
from course_utils.tokens import STANDARD_TIER, Price, is_year_month, load_prices

__all__ = ["ARTICLE_BENCHMARKS_FILE", "ARTICLE_TABLE_FILE", "MODELS_FILE", "ModelInfo", "article_benchmarks",
           "audit_article_table", "landscape", "load_models"]

MODELS_FILE = Path(__file__).resolve().parent.parent / "data" / "models.csv"
ARTICLE_TABLE_FILE = MODELS_FILE.with_name("article_model_table.csv")
ARTICLE_BENCHMARKS_FILE = MODELS_FILE.with_name("article_benchmarks.csv")
_COLUMNS = ("model", "provider", "released", "context_window", "open_weights", "license", "total_params_b",
            "active_params_b", "sizing_config", "source")
OPEN_WEIGHTS = ("yes", "no", "research only")


@dataclass(frozen=True)
class ModelInfo:
    """One model: provider, release month (YYYY-MM), window in tokens, weights, and size in billions
    of parameters (``None`` where the maker does not publish it; ``active`` < ``total`` for a mixture of experts)."""

    model: str
    provider: str
    released: str
    context_window: int
    open_weights: str
    license: str
    total_params_b: float | None
    active_params_b: float | None
    sizing_config: str
    source: str


def _number(text: str) -> float | None:
    return float(text) if text.strip() else None


def _model_row(row: dict[str, str], where: str) -> ModelInfo:
    missing = [c for c in _COLUMNS if row.get(c) is None]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}; expected {', '.join(_COLUMNS)}")
    try:
        info = ModelInfo(row["model"].strip(), row["provider"].strip(), row["released"].strip(),
                         int(row["context_window"]), row["open_weights"].strip(), row["license"].strip(),
                         _number(row["total_params_b"]), _number(row["active_params_b"]),
                         row["sizing_config"].strip(), row["source"].strip())
    except ValueError as err:
        raise ValueError(f"{where}: context_window must be an integer and sizes numbers ({err})") from None
    if not is_year_month(info.released):
        raise ValueError(f"{where}: released must be YYYY-MM, got {info.released!r}")
    if not info.source:
        raise ValueError(f"{where}: {info.model} needs a source (where its facts were published)")
    if info.open_weights not in OPEN_WEIGHTS:
        raise ValueError(f"{where}: open_weights must be one of {', '.join(OPEN_WEIGHTS)}, got {info.open_weights!r}")
    if (info.total_params_b is None) != (info.active_params_b is None) or (
            info.total_params_b is not None and not 0 < info.active_params_b <= info.total_params_b):
        raise ValueError(f"{where}: give both total and active parameters (0 < active <= total) or neither")
    return info


def load_models(path: str | Path = MODELS_FILE) -> list[ModelInfo]:
    """Every row of the model table, in file order."""
    path = Path(path)
    models = [_model_row(row, where) for where, row in read_csv_rows(path, "model")]
    names = [m.model for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"{path.name}: a model is listed twice: "
                         f"{', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return models


def landscape(models: list[ModelInfo] | None = None, prices: list[Price] | None = None) -> list[dict]:
    """One row per model: its facts beside its current standard price (``None`` where it has no API price)."""
    models = load_models() if models is None else models
    current = {p.model: p for p in (load_prices() if prices is None else prices) if p.tier == STANDARD_TIER}
    rows = []
    for m in models:
        price = current.get(m.model)
        rows.append({"model": m.model, "provider": m.provider, "released": m.released, "window": m.context_window,
                     "open weights": m.open_weights, "params (B)": m.total_params_b, "active (B)": m.active_params_b,
                     "$/M in": price.input_usd_per_m if price else None,
                     "$/M out": price.output_usd_per_m if price else None,
                     "price as of": price.as_of if price else None})
    return rows


def audit_article_table(as_of: str, path: str | Path = ARTICLE_TABLE_FILE) -> list[dict]:
    """Check each row of the article's model table (dated ``as_of``, YYYY-MM) against the dated tables.

    For each row: when its prices were the list price (the dated row they match), whether a later
    row had replaced them by ``as_of``, whether they apply to the whole window it states, and
    whether the window is the one of the model priced so. Returns one dict per row with a list of
    ``problems`` (empty where the row holds).
    """
    quoted = [row for _, row in read_csv_rows(path, "article table")]
    history = load_prices(history=True)
    info = {m.model: m for m in load_models()}
    report = []
    for row in quoted:
        model, window = row["model"], int(row["context_window"])
        pair = (float(row["input_usd_per_m"]), float(row["output_usd_per_m"]))
        rows = [p for p in history if p.model == model]
        matching = [p for p in rows if (p.input_usd_per_m, p.output_usd_per_m) == pair]
        problems = []
        if not matching:
            problems.append(f"no dated row of {model} has ${pair[0]:g}/${pair[1]:g}")
        else:
            match = matching[0]
            later = [p for p in rows if p.tier == match.tier and match.as_of < p.as_of <= as_of]
            if later:
                problems.append(f"${pair[0]:g}/${pair[1]:g} is the {match.as_of} price; from {later[0].as_of} it was "
                                f"${later[0].input_usd_per_m:g}/${later[0].output_usd_per_m:g}")
            if match.max_prompt_tokens < window:
                problems.append(f"${pair[0]:g}/${pair[1]:g} applies to prompts up to {match.max_prompt_tokens:,} "
                                f"tokens; longer prompts in the {window:,}-token window cost more")
            if match.context_window != window and match.max_prompt_tokens >= window:
                problems.append(f"the model priced ${pair[0]:g}/${pair[1]:g} ({match.as_of}) has a "
                                f"{match.context_window:,}-token window, not {window:,}")
        report.append({"model": model, "quoted window": window, "quoted $/M": f"{pair[0]:g}/{pair[1]:g}",
                       "open weights": info[model].open_weights if model in info else None,
                       "problems": problems})
    return report


def article_benchmarks(path: str | Path = ARTICLE_BENCHMARKS_FILE) -> list[dict[str, Any]]:
    """The article's benchmark table: each "typical frontier score" as quoted (a range, its unit and
    whom it is quoted for; nothing the course can reproduce on its machines), with the section of
    chapter 3 that scores the same kind of benchmark and the course function that does it."""
    table = []
    for where, row in read_csv_rows(path, "benchmark"):
        try:
            low, high = float(row["quoted_low"]), float(row["quoted_high"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: quoted_low and quoted_high must be numbers") from None
        if not low <= high or not row.get("course_section", "").startswith("#"):
            raise ValueError(f"{where}: need quoted_low <= quoted_high and a chapter 3 heading")
        table.append({**row, "quoted_low": low, "quoted_high": high, "status": "quoted, not reproduced here"})
    return table
