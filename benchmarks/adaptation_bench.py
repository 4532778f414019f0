"""Fine-tuning methods and LoRA hyperparameters on the booking task, measured side by side in one run.

The model is the embedded SmolLM2-135M-Instruct; the task is chapter 6's: a booking message in,
one line of JSON with four fields out, scored on held-out messages written with templates that
training never sees. Every run starts from the same weights, sees the same examples in the same
order (seed 0) for the same number of steps, and is scored greedily on the same held-out bookings.

* ``methods``: full fine-tuning, the course's LoRA, peft's LoRA with the same configuration, IA3
  and prompt tuning (both through peft), each with its trainable parameters (computed from the
  shapes and as peft reports them), the bytes one training step holds, training seconds, and the
  held-out scores with 95% intervals (Wilson for rates, bootstrap over bookings for the mean field
  accuracy); each method's field accuracy is also compared with full fine-tuning's, booking by
  booking (the article's "90-95% of full fine-tuning" for LoRA);
* ``lora_grid``: the course's LoRA varied one factor at a time around rank 16, alpha 32, q and v,
  learning rate 3e-3 and 10% warm-up: rank 4-64 (alpha 2r), alpha = r, all linear layers,
  learning rates 1e-3 and 1e-2, no warm-up.

Writes benchmarks/results/adaptation.json. Full runs take about half an hour on 2 CPU cores;
``QUICK=1`` runs a slice (the five methods, ranks 4 and 16) with fewer steps and bookings.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "adaptation.json"
QUICK = os.environ.get("QUICK") == "1"
SEED = 0
TRAIN_BOOKINGS, HELD_OUT_BOOKINGS, STEPS = (24, 10, 6) if QUICK else (120, 40, 30)
BATCH = 4
BASE_LORA = {"r": 16, "alpha": 32.0, "targets": ("q_proj", "v_proj")}
LEARNING_RATES = {"full fine-tuning": 1e-4, "LoRA (course)": 3e-3, "LoRA (peft)": 3e-3, "IA3 (peft)": 3e-2,
                  "prompt tuning (peft)": 3e-2}
VIRTUAL_TOKENS = 20


def main() -> None:
    import torch

    from course_utils.defaults import DEFAULT_MODEL
    from course_utils.environment import record_benchmark
    from course_utils.finetune.bookings import INSTRUCTION, booking_messages, extract, make_bookings, score_extractions
    from course_utils.finetune.lora import ALL_LINEAR, LoRAConfig, inject_lora
    from course_utils.finetune.memory import measure_training_memory
    from course_utils.finetune.peft_methods import PromptTunedGenerator, attach, expected_trainable
    from course_utils.finetune.sft import SFTConfig, collate, tokenize_chat, train_sft
    from course_utils.models import load_model
    from course_utils.stats import mean_interval, paired_difference, rate

    torch.manual_seed(SEED)
    base, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    pad = tokenizer.pad_token_id
    train = [tokenize_chat(tokenizer, booking_messages(b)) for b in make_bookings(TRAIN_BOOKINGS, seed=SEED)]
    held_out = make_bookings(HELD_OUT_BOOKINGS, "held_out", seed=SEED)
    memory_batch = collate(train[:BATCH], pad)
    tokenizer_dir = tempfile.mkdtemp()
    tokenizer.save_pretrained(tokenizer_dir)  # peft initialises the prompt from a text through a saved tokenizer

    def build(method: str, options: dict):
        model = copy.deepcopy(base)
        if method == "full":
            model.requires_grad_(True)
            return model
        if method == "course lora":
            model.requires_grad_(False)
            inject_lora(model, LoRAConfig(**options))
            return model
        return attach(model, method, **options)

    def run(label: str, method: str, options: dict, lr: float, warmup: float = 0.1) -> dict:
        memory = measure_training_memory(build(method, options), memory_batch, lr=lr)
        model = build(method, options)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        config = SFTConfig(steps=STEPS, batch_size=BATCH, lr=lr, warmup_ratio=warmup, seed=SEED)
        history = train_sft(model, train, config, pad, progress=False)
        start = time.perf_counter()
        generator = PromptTunedGenerator(model) if method == "prompt_tuning" else model  # see peft_methods
        score = score_extractions(extract(generator, tokenizer, held_out, max_new_tokens=44), held_out)
        field = mean_interval(score.per_booking, seed=SEED)
        compliance = rate(round(score.compliance * len(held_out)), len(held_out))
        exact = rate(round(score.exact * len(held_out)), len(held_out))
        return {"label": label, "method": method, "options": {k: list(v) if isinstance(v, tuple) else v
                                                               for k, v in options.items()},
                "lr": lr, "warmup_ratio": warmup, "trainable": trainable,
                "trainable_share": trainable / sum(p.numel() for p in base.parameters()),
                "step_memory_mb": {k: v / 1e6 for k, v in asdict(memory).items()} | {"total": memory.total / 1e6},
                "train_s": history.seconds, "score_s": time.perf_counter() - start,
                "final_train_loss": history.train_loss[-1],
                "field_accuracy": {"value": field.value, "ci95": [field.low, field.high]},
                "compliance": {"value": compliance.value, "ci95": [compliance.low, compliance.high]},
                "all_fields": {"value": exact.value, "ci95": [exact.low, exact.high]},
                "per_booking": score.per_booking}

    prompt_options = {"num_virtual_tokens": VIRTUAL_TOKENS, "init_text": INSTRUCTION, "tokenizer_name": tokenizer_dir}
    plans = [("full fine-tuning", "full", {}), ("LoRA (course)", "course lora", BASE_LORA),
             ("LoRA (peft)", "lora", BASE_LORA), ("IA3 (peft)", "ia3", {}),
             ("prompt tuning (peft)", "prompt_tuning", prompt_options)]
    methods = [run(label, method, options, LEARNING_RATES[label]) for label, method, options in plans]
    for row, (_, method, options) in zip(methods[1:], plans[1:], strict=True):
        kind = "lora" if method == "course lora" else method
        row["trainable_computed"] = expected_trainable(base.config, kind, **options)
    full = methods[0]
    for row in methods[1:]:
        diff = paired_difference(row["per_booking"], full["per_booking"], seed=SEED)
        row["field_accuracy_minus_full"] = {"value": diff.value, "ci95": [diff.low, diff.high]}
        row["share_of_full"] = row["field_accuracy"]["value"] / max(full["field_accuracy"]["value"], 1e-9)

    grid_plan = [("rank", r, {"r": r, "alpha": 2.0 * r}) for r in ((4, 16) if QUICK else (4, 8, 16, 32, 64))]
    if not QUICK:
        grid_plan += [("alpha", "alpha = r", {"alpha": 16.0}), ("targets", "all linear", {"targets": ALL_LINEAR}),
                      ("lr", 1e-3, {}), ("lr", 1e-2, {}), ("warm-up", 0.0, {})]
    grid = []
    for factor, value, change in grid_plan:
        options = {**BASE_LORA, **change}
        lr = value if factor == "lr" else LEARNING_RATES["LoRA (course)"]
        warmup = value if factor == "warm-up" else 0.1
        row = run(f"{factor}: {value}", "course lora", options, lr, warmup)
        grid.append({"factor": factor, "value": value, **row})
    qv = expected_trainable(base.config, "lora", **BASE_LORA)
    all_linear = expected_trainable(base.config, "lora", **{**BASE_LORA, "targets": ALL_LINEAR})

    result = record_benchmark(
        RESULTS, "adaptation", model=DEFAULT_MODEL, quick=QUICK, seed=SEED,
        task={"train_bookings": TRAIN_BOOKINGS, "held_out_bookings": HELD_OUT_BOOKINGS, "steps": STEPS,
              "batch_size": BATCH, "examples_seen": STEPS * BATCH},
        methods=methods, lora_grid=grid,
        grid_base={**BASE_LORA, "targets": list(BASE_LORA["targets"]), "lr": LEARNING_RATES["LoRA (course)"],
                   "warmup_ratio": 0.1},
        adapter_size_all_linear_over_qv=all_linear / qv,
        peft_matches_course_lora=methods[1]["trainable"] == methods[2]["trainable"],
    )
    summary = {r["label"]: (r["trainable"], round(r["field_accuracy"]["value"], 3)) for r in methods + grid}
    print(json.dumps(summary, indent=1))
    if not result["peft_matches_course_lora"]:
        raise SystemExit("peft's LoRA and the course's train different numbers of parameters")


if __name__ == "__main__":
    main()
