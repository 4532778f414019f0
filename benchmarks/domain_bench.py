"""Continued pre-training on a domain, full-parameter against LoRA, measured in one run.

The model is the embedded SmolLM2-135M-Instruct. The domain is the standard library's
docstrings (``course_utils.finetune.domain``): training on the docstrings of most modules,
measured on those of modules training never saw. Forgetting is measured on the course's ten
held-out passages of general prose (chapter 5's). Both methods see the same chunks in the same
order (seed 0):

* full fine-tuning of every parameter, AdamW at 5e-5;
* LoRA rank 16 on every linear layer of every block, AdamW at 1e-3;

each for 40 steps of 4 chunks of 256 tokens (40,960 tokens). Recorded: the tokenizer's
fertility (tokens per word) on the domain and on the general prose; for each method the
perplexity of both held-out texts before and after, the change per held-out chunk with a 95%
paired bootstrap interval, training seconds and the bytes one training step holds.

Writes benchmarks/results/domain.json (about 10 minutes on 2 CPU cores).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "domain.json"
SEED = 0
SEQ_LEN, STEPS, BATCH = 256, 40, 4
HELD_OUT_CHUNKS = 24
PLANS = {"full fine-tuning": 5e-5, "LoRA r=16, all linear layers": 1e-3}


def main() -> None:
    import numpy as np
    import torch

    from course_utils.defaults import DEFAULT_MODEL
    from course_utils.environment import record_benchmark
    from course_utils.evaluation import perplexity_of, sequence_nlls
    from course_utils.finetune.domain import domain_texts, fertility, packed_examples
    from course_utils.finetune.lora import ALL_LINEAR, LoRAConfig, inject_lora
    from course_utils.finetune.memory import measure_training_memory
    from course_utils.finetune.sft import SFTConfig, collate, train_sft
    from course_utils.models import load_model
    from course_utils.quantization.texts import held_out_passages
    from course_utils.stats import paired_difference
    from course_utils.tasks import load_task

    torch.manual_seed(SEED)
    base, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    pad = tokenizer.pad_token_id
    train_texts, held_out_texts = domain_texts(held_out=False), domain_texts(held_out=True)
    train = packed_examples(tokenizer, train_texts, SEQ_LEN, STEPS * BATCH)
    domain = [e.input_ids for e in packed_examples(tokenizer, held_out_texts, SEQ_LEN, HELD_OUT_CHUNKS)]
    general = held_out_passages(tokenizer)

    @torch.no_grad()
    def quality(model) -> dict:
        out = {}
        for name, texts in (("domain", domain), ("general", general)):
            nlls = sequence_nlls(model, texts)
            out[name] = {"perplexity": perplexity_of(nlls), "per_text_nll": [s / n for s, n in nlls]}
        return out

    def build(label: str):
        model = copy.deepcopy(base)
        if label.startswith("LoRA"):
            model.requires_grad_(False)
            inject_lora(model, LoRAConfig(r=16, alpha=32, targets=ALL_LINEAR))
        else:
            model.requires_grad_(True)
        return model

    before = quality(base)
    runs = []
    for label, lr in PLANS.items():
        memory = measure_training_memory(build(label), collate(train[:BATCH], pad), lr=lr)
        model = build(label)
        history = train_sft(model, train, SFTConfig(steps=STEPS, batch_size=BATCH, lr=lr, warmup_ratio=0.1, seed=SEED),
                            pad, progress=False)
        after = quality(model)
        row = {"method": label, "lr": lr, "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
               "train_s": history.seconds, "tokens_seen": STEPS * BATCH * SEQ_LEN,
               "step_memory_mb": {k: v / 1e6 for k, v in asdict(memory).items()} | {"total": memory.total / 1e6},
               "train_loss_first_last": [history.train_loss[0], history.train_loss[-1]]}
        for name in ("domain", "general"):
            diff = paired_difference(after[name]["per_text_nll"], before[name]["per_text_nll"], seed=SEED)
            row[name] = {"perplexity_before": before[name]["perplexity"], "perplexity_after": after[name]["perplexity"],
                         "change": after[name]["perplexity"] / before[name]["perplexity"] - 1,
                         "nll_change_per_text": {"value": diff.value, "ci95": [diff.low, diff.high],
                                                 "texts": len(after[name]["per_text_nll"])}}
        runs.append(row)
        del model

    general_prose = [r["text"] for r in load_task("passages")]
    result = record_benchmark(
        RESULTS, "domain", model=DEFAULT_MODEL, seed=SEED,
        corpus={"domain": "docstrings of the Python standard library (>= 200 characters), split by file",
                "training_docstrings": len(train_texts), "held_out_docstrings": len(held_out_texts),
                "held_out_chunks": len(domain), "general": "course_utils/data/passages.jsonl (10 passages)"},
        plan={"seq_len": SEQ_LEN, "steps": STEPS, "batch_size": BATCH, "warmup_ratio": 0.1},
        fertility={"domain_tokens_per_word": fertility(tokenizer, held_out_texts),
                   "general_tokens_per_word": fertility(tokenizer, general_prose)},
        runs=runs,
    )
    print(json.dumps({"fertility": result["fertility"],
                      "runs": [{k: (v if not isinstance(v, dict) or "perplexity_before" not in v else
                                    {x: round(v[x], 3) for x in ("perplexity_before", "perplexity_after", "change")})
                                for k, v in r.items() if k != "step_memory_mb"} for r in runs]},
                     indent=1, default=lambda x: float(np.round(x, 3))))


if __name__ == "__main__":
    main()
