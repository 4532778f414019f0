"""LoRA (Hu et al., 2022) from scratch: a frozen linear layer plus a trainable low-rank update.

A frozen weight ``W`` (out, in) gets an update ``ΔW = B A · α/r`` with ``A`` (r, in) and ``B``
(out, r), so the layer computes ``W x + B (A x) · α/r`` and trains ``r · (in + out)`` numbers
instead of ``in · out``. ``A`` starts random (Kaiming-uniform, as peft does) and ``B`` at zero,
so before training the adapted model is exactly the base model. Merging adds ``ΔW`` into ``W``
for serving at no extra cost; unmerging takes it out again.

The base layer may be anything that maps (..., in) to (..., out) with ``in_features`` and
``out_features`` attributes: an ``nn.Linear``, or a 4-bit
:class:`~course_utils.quantization.QuantizedLinear` for QLoRA (:mod:`course_utils.finetune.qlora`).

Adapters are saved as safetensors with a small JSON config, as peft does, so a few megabytes
carry a fine-tune of a model of any size.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from course_utils.architecture.sizing import config_shape

__all__ = [
    "LoRAConfig", "LoRALinear", "count_lora_params", "inject_lora", "load_adapter", "lora_disabled", "lora_layers",
    "lora_parameters", "merge_lora", "save_adapter", "trainable_parameter_count",
]

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class LoRAConfig:
    """What to adapt and how.

    targets: module-name patterns; a name matches a pattern that equals its last component(s)
        (``"q_proj"`` matches ``model.layers.3.self_attn.q_proj``) or, for a pattern starting with
        ``re:``, a regular expression searched in the full name.
    layers: only these decoder blocks (by the index after ``layers.`` in the name), or all.
    """

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"the rank r must be a positive integer, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("targets is empty: name the layers to adapt, e.g. ('q_proj', 'v_proj')")


class LoRALinear(nn.Module):
    """``base(x) + B(A(dropout(x))) · α/r`` with ``base`` frozen.

    A: (r, in) Kaiming-uniform; B: (out, r) zeros; x (..., in) -> (..., out).
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if r < 1:
            raise ValueError(f"the rank r must be a positive integer, got {r}")
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.scaling = r, alpha / r
        reference = next(iter(base.parameters()), None)
        device = reference.device if reference is not None else None
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own initialisation, as peft
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.enabled = True
        for p in base.parameters():
            p.requires_grad_(False)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = B A · α/r, (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged or not self.enabled:
            return out
        update = self.dropout(x).to(self.lora_A.dtype) @ self.lora_A.T @ self.lora_B.T
        return out + (update * self.scaling).to(out.dtype)

    def _base_weight(self) -> torch.Tensor:
        if not isinstance(self.base, nn.Linear):
            raise TypeError(f"can only merge into an nn.Linear, not {type(self.base).__name__}; "
                            "merge_lora(model) de-quantizes a QLoRA base first")
        return self.base.weight

    @torch.no_grad()
    def merge(self) -> None:
        """Add ΔW into the base weight; the layer then computes the same with one matmul."""
        if not self.merged:
            weight = self._base_weight()
            weight += self.delta_weight().to(weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take ΔW out of the base weight again."""
        if self.merged:
            weight = self._base_weight()
            weight -= self.delta_weight().to(weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}, merged={self.merged}"


def _matches(name: str, config: LoRAConfig) -> bool:
    if config.layers is not None:
        block = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
        if block is None or int(block.group(1)) not in config.layers:
            return False
    for pattern in config.targets:
        if pattern.startswith("re:"):
            if re.search(pattern[3:], name):
                return True
        elif name == pattern or name.endswith("." + pattern):
            return True
    return False


def inject_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Freeze every parameter of ``model`` and wrap each matching layer in a :class:`LoRALinear`.

    Returns the names of the wrapped layers; raises if none matched (a typo in ``targets`` would
    otherwise train nothing).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    names = [name for name, module in model.named_modules()
             if _matches(name, config) and hasattr(module, "in_features") and not isinstance(module, LoRALinear)]
    if not names:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"no layer matches targets {config.targets} (layers={config.layers}); "
                         f"the model's linear layers are named: {', '.join(linear)}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), config.r, config.alpha, config.dropout))
    return names


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every LoRA layer of ``model`` by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors (``<layer>.lora_A``, ``<layer>.lora_B``): all an adapter file holds."""
    return {f"{name}.{part}": getattr(layer, part) for name, layer in lora_layers(model).items()
            for part in ("lora_A", "lora_B")}


def trainable_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as its base model: DPO's frozen reference without a second copy in memory."""
    layers = list(lora_layers(model).values())
    if any(layer.merged for layer in layers):
        raise ValueError("the adapters are merged into the weights; unmerge them before disabling them")
    for layer in layers:
        layer.enabled = False
    try:
        yield
    finally:
        for layer in layers:
            layer.enabled = True


def save_adapter(model: nn.Module, directory: str | Path, config: LoRAConfig) -> Path:
    """Write the adapter tensors (safetensors) and ``config`` (JSON) into ``directory``; returns the weights file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in lora_parameters(model).items()}
    if not tensors:
        raise ValueError("the model has no LoRA layers: call inject_lora first")
    path = directory / ADAPTER_WEIGHTS
    save_file(tensors, str(path))
    (directory / ADAPTER_CONFIG).write_text(json.dumps(asdict(config), indent=2) + "\n")
    return path


def load_adapter(model: nn.Module, directory: str | Path) -> LoRAConfig:
    """Inject LoRA layers as saved in ``directory`` into ``model`` and load their weights."""
    directory = Path(directory)
    if not (directory / ADAPTER_WEIGHTS).exists():
        raise FileNotFoundError(f"no {ADAPTER_WEIGHTS} in {directory}; save one with save_adapter()")
    raw = json.loads((directory / ADAPTER_CONFIG).read_text())
    config = LoRAConfig(**{**raw, "targets": tuple(raw["targets"]),
                           "layers": None if raw["layers"] is None else tuple(raw["layers"])})
    if not lora_layers(model):
        inject_lora(model, config)
    saved = load_file(str(directory / ADAPTER_WEIGHTS))
    own = lora_parameters(model)
    if set(saved) != set(own):
        raise ValueError(f"the adapter does not fit this model: {len(set(saved) ^ set(own))} tensor names differ, "
                         f"e.g. {sorted(set(saved) ^ set(own))[:3]}")
    with torch.no_grad():
        for name, tensor in saved.items():
            own[name].copy_(tensor)
    return config


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base ``nn.Linear`` and put the plain layer back; returns ``model``.

    A quantized base (QLoRA) is first de-quantized to float32: the merged layer cannot stay 4-bit
    without rounding the update away, so re-quantize the merged model if it must be small.
    """
    for name, layer in lora_layers(model).items():
        if not isinstance(layer.base, nn.Linear) and hasattr(layer.base, "to_linear"):
            layer.base = layer.base.to_linear()
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base)
    return model


def _llama_shapes(config: Any) -> dict[str, tuple[int, int]]:
    """(input size, output size) of each linear layer of a Llama-family block."""
    _, d, _, heads, kv, head_dim, ff = config_shape(config)
    return {"q_proj": (d, heads * head_dim), "k_proj": (d, kv * head_dim), "v_proj": (d, kv * head_dim),
            "o_proj": (heads * head_dim, d), "gate_proj": (d, ff), "up_proj": (d, ff), "down_proj": (ff, d)}


ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def count_lora_params(config: Any, r: int, targets: Sequence[str]) -> int:
    """Trainable numbers of rank-``r`` LoRA on ``targets`` of every block of a Llama-family ``config``.

    Each adapted (in -> out) layer adds r·(in + out). ``targets`` may be ``"all-linear"`` or
    names from ``q_proj k_proj v_proj o_proj gate_proj up_proj down_proj``.
    """
    shapes = _llama_shapes(config)
    names = ALL_LINEAR if targets == "all-linear" else tuple(targets)
    unknown = [t for t in names if t not in shapes]
    if unknown:
        raise ValueError(f"unknown targets {unknown}; choose from {', '.join(ALL_LINEAR)} or 'all-linear'")
    per_block = sum(r * (shapes[t][0] + shapes[t][1]) for t in names)
    return per_block * config_shape(config)[2]
