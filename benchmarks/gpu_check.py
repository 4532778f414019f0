"""The course's GPU path, checked and measured in one command: ``make gpu-check``.

The notebooks promise that the same code runs on a CUDA machine. This script is how that promise
is kept between the rare runs on one: it needs only torch and transformers (what a bare CUDA image
has) and the course package from the working tree, no offline assets and no network. Models are
built with random weights in the published shapes (:data:`course_utils.architecture.sizing.PUBLISHED_CONFIGS`),
and a tokenizer that needs no files stands in for the real one (token ``i`` is the word ``t<i>``).

**Correctness** (the small SmolLM2-135M shape, both modes; stop the run with exit status 1 if one fails)

1. logits: the course's :class:`~course_utils.architecture.transformer.Llama` against transformers'
   ``LlamaForCausalLM`` with the same weights. float32 (TF32 off): max |difference| <= FP32_ATOL.
   bfloat16: both are compared with the float32 logits, and the course's error may be at most
   BF16_ERROR_RATIO times transformers' own bfloat16 error (bf16 rounding differs between any two
   implementations; a wrong kernel or a lost cast shows as many times more). On CUDA the same
   bfloat16 comparison runs on the Llama-3.1-8B shape too.
2. the serving engine's greedy output equals transformers' greedy output token for token (float32).
3. tiled (FlashAttention-style) attention equals SDPA, causal, sliding-window and full.
4. QLoRA's NF4: the course's codes and dequantized weights equal bitsandbytes', and a bfloat16
   matmul through bitsandbytes' 4-bit kernel agrees with one through the course's dequantized
   weights; skipped, with the reason, where bitsandbytes is missing or cannot run here.

**Performance** (CUDA: the Llama-3.1-8B shape in bfloat16; CPU: the small shape in float32, fewer tokens)

transformers ``generate`` at batch 1 and as a static batch, the course engine at several numbers
of concurrent requests, and a mixed-length workload (output lengths drawn at random) through
static batches against the engine with as many sequences running. Each rate is set against the
roofline this run measures: a device-to-device copy for the memory bandwidth (batch-1 decode
must read every weight once per token) and a matmul for the FLOP/s (large batches). Goals
(issue 28, set for the GPU run): batch-1 decode >= GOAL_BANDWIDTH_SHARE of the bandwidth
roofline; the engine >= GOAL_OVER_STATIC x the static batch's useful tokens/s on the mixed load.
A missed goal is recorded with the amount it was missed by; it does not fail the run.

Writes ``benchmarks/results/gpu.json`` on CUDA, ``benchmarks/results/gpu_check_cpu.json`` on a CPU.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # a bare GPU image runs the course from the working tree, not installed
    sys.path.insert(0, str(ROOT))

from course_utils.architecture.attention import sdpa_attention, tiled_attention  # noqa: E402
from course_utils.architecture.sizing import published_config  # noqa: E402
from course_utils.architecture.transformer import Llama  # noqa: E402
from course_utils.environment import record_benchmark  # noqa: E402
from course_utils.serving.baselines import static_batch_generate  # noqa: E402
from course_utils.serving.llm import LLM  # noqa: E402
from course_utils.serving.roofline import decode_step_seconds, matmul_flops, memory_bandwidth  # noqa: E402
from course_utils.serving.sampling import SamplingParams  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SMALL = "smollm2-135m"
FP32_ATOL = 1e-4  # float32 logits, course vs transformers (the unit tests' tolerance on the real weights)
BF16_ERROR_RATIO = 2.0  # the course's bf16 error against fp32 may be at most this times transformers' own
ATTENTION_ATOL = 1e-5  # tiled vs SDPA in float32 (tests/test_attention.py's tolerance)
NF4_MATMUL_RTOL = 1e-2  # bf16 matmul through bitsandbytes' 4-bit kernel vs through our dequantized weights
GOAL_BANDWIDTH_SHARE = 0.6
GOAL_OVER_STATIC = 5.0
SEED = 0


@dataclass(frozen=True)
class Plan:
    """What one mode measures. Lengths in tokens; ``mixed_lengths`` bounds the random output lengths."""

    device: str
    shape: str  # the published config the performance part builds
    dtype: torch.dtype
    prompt_tokens: int
    output_tokens: int
    concurrency: tuple[int, ...]
    static_batch: int
    mixed_requests: int
    mixed_lengths: tuple[int, int]
    matmul_n: int
    copy_bytes: int
    out: Path


PLANS = {
    "cuda": Plan("cuda", "llama-3.1-8b", torch.bfloat16, 128, 128, (1, 16, 64, 256), 64, 128, (16, 256),
                 8192, 2 ** 30, RESULTS / "gpu.json"),
    "cpu": Plan("cpu", SMALL, torch.float32, 32, 16, (1, 4, 16), 16, 32, (4, 32),
                1024, 256 * 2 ** 20, RESULTS / "gpu_check_cpu.json"),
}


def numbered_tokenizer(vocab_size: int):
    """A fast tokenizer built in memory: token ``i`` is the word ``t<i>``, split on spaces.

    Padding is ``t0`` on the left; end-of-text is the last token (the runs below ignore it)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    inner = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=inner, pad_token="t0", eos_token=f"t{vocab_size - 1}",
                                   padding_side="left")


def random_prompts(count: int, length: int, vocab_size: int, seed: int) -> list[list[int]]:
    """``count`` prompts of ``length`` random token ids (no shared prefix, so no prefix-cache hits)."""
    rng = random.Random(seed)
    return [[rng.randrange(1, vocab_size - 1) for _ in range(length)] for _ in range(count)]


def as_text(ids: list[int]) -> str:
    return " ".join(f"t{i}" for i in ids)


def random_transformers_model(shape: str, device: str, seed: int):
    """transformers' LlamaForCausalLM in a published shape with its own random initialisation, float32."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(published_config(shape))
    model.generation_config.eos_token_id = None  # generate exactly the tokens asked for, like ignore_eos
    model.generation_config.pad_token_id = 0
    return model.eval()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- correctness


@torch.no_grad()
def check_logits(hf, ids: torch.Tensor, keep_dtype: torch.dtype) -> tuple[dict, Llama]:
    """Compare the course's Llama with ``hf`` (float32) on (B, T) ``ids``, in float32 and bfloat16.

    Returns the report and the course model; both models end in ``keep_dtype`` (bfloat16 converts
    them in place, which a model of billions of parameters needs; float32 compares copies)."""
    reference = hf(ids).logits.float()
    with torch.device(hf.device):  # built where it will run: an 8B model is not first made in CPU memory
        course = Llama.from_hf(hf)
    fp32_diff = (course(ids).float() - reference).abs().max().item()
    hf16, course16 = (hf, course) if keep_dtype == torch.bfloat16 else (copy.deepcopy(hf), copy.deepcopy(course))
    hf16.to(torch.bfloat16)
    course16.to(torch.bfloat16)
    hf_logits, course_logits = hf16(ids).logits.float(), course16(ids).float()
    hf_error = (hf_logits - reference).abs().max().item()
    course_error = (course_logits - reference).abs().max().item()
    agreement = (course_logits.argmax(-1) == hf_logits.argmax(-1)).float().mean().item()
    report = {
        "tokens": list(ids.shape), "logit_scale": round(reference.abs().max().item(), 4),
        "fp32": {"max_abs_diff": fp32_diff, "tolerance": FP32_ATOL, "passed": fp32_diff <= FP32_ATOL},
        "bf16": {"course_error_vs_fp32": course_error, "transformers_error_vs_fp32": hf_error,
                 "allowed_ratio": BF16_ERROR_RATIO, "argmax_agreement": round(agreement, 4),
                 "passed": course_error <= BF16_ERROR_RATIO * hf_error},
    }
    report["passed"] = report["fp32"]["passed"] and report["bf16"]["passed"]
    return report, course


@torch.no_grad()
def check_engine_greedy(hf, course: Llama, tokenizer, prompts: list[list[int]], new_tokens: int) -> dict:
    """The engine's batched greedy tokens against transformers' ``generate``, one prompt at a time."""
    device = hf.device
    expected = []
    for ids in prompts:
        out = hf.generate(torch.tensor([ids], device=device), attention_mask=torch.ones(1, len(ids), device=device,
                          dtype=torch.long), max_new_tokens=new_tokens, do_sample=False)
        expected.append(out[0, len(ids):].tolist())
    llm = LLM.from_model(course, tokenizer, num_blocks=64, block_size=16, max_model_len=256,
                         max_num_seqs=len(prompts))
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    got = [o.outputs[0].token_ids for o in llm.generate([{"prompt_token_ids": p} for p in prompts], params)]
    same = sum(g == e for g, e in zip(got, expected, strict=True))
    first_difference = next(([i, next(j for j, (a, b) in enumerate(zip(g, e, strict=True)) if a != b)]
                             for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e), None)
    return {"prompts": len(prompts), "prompt_lengths": [len(p) for p in prompts], "new_tokens": new_tokens,
            "identical": same, "first_difference_at": first_difference, "passed": same == len(prompts)}


def check_attention(device: str) -> dict:
    """Tiled attention against SDPA (the course's wrapper of torch's kernel), float32, with GQA."""
    g = torch.Generator().manual_seed(SEED)
    q = torch.randn(2, 9, 80, 64, generator=g).to(device)
    k, v = (torch.randn(2, 3, 144, 64, generator=g).to(device) for _ in range(2))
    cases = {"causal, 80 queries after 64 cached": dict(causal=True),
             "sliding window 32": dict(causal=True, window=32),
             "full (no mask)": dict(causal=False)}
    diffs = {name: (tiled_attention(q, k, v, q_tile=32, k_tile=48, **kw) - sdpa_attention(q, k, v, **kw))
             .abs().max().item() for name, kw in cases.items()}
    return {"max_abs_diff": diffs, "tolerance": ATTENTION_ATOL, "passed": max(diffs.values()) <= ATTENTION_ATOL}


def check_nf4(device: str) -> dict:
    """The course's NF4 against bitsandbytes on this device (skipped, with the reason, where it cannot run)."""
    from course_utils.quantization.nf4 import dequantize_nf4, quantize_nf4

    try:
        import bitsandbytes
        import bitsandbytes.functional as bnb
    except ImportError as err:
        return {"skipped": f"bitsandbytes is not installed ({err})"}
    g = torch.Generator().manual_seed(SEED)
    weight = (0.02 * torch.randn(1536, 576, generator=g)).to(device)
    x = torch.randn(8, 576, generator=g).to(device, torch.bfloat16)
    try:
        packed, state = bnb.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=False)
        theirs = bnb.dequantize_4bit(packed, state).reshape(weight.shape)
        their_matmul = bitsandbytes.matmul_4bit(x, packed.t(), quant_state=state).float()
    except Exception as err:  # a build without kernels for this device
        return {"skipped": f"bitsandbytes {bitsandbytes.__version__} cannot run 4-bit on {device}: "
                           f"{type(err).__name__}: {str(err)[:200]}"}
    ours = quantize_nf4(weight, double_quant=False)
    our_matmul = (x @ dequantize_nf4(ours).to(torch.bfloat16).t()).float()
    matmul_rel = ((their_matmul - our_matmul).norm() / our_matmul.norm()).item()
    report = {"bitsandbytes": bitsandbytes.__version__,
              "codes_equal": torch.equal(ours.packed, packed.reshape(-1)),
              "scales_equal": torch.equal(ours.absmax, state.absmax),
              "dequantized_equal": torch.equal(dequantize_nf4(ours), theirs),
              "matmul_relative_error": matmul_rel, "matmul_tolerance": NF4_MATMUL_RTOL}
    report["passed"] = (report["codes_equal"] and report["scales_equal"] and report["dequantized_equal"]
                        and matmul_rel <= NF4_MATMUL_RTOL)
    return report


# ---------------------------------------------------------------- performance


def weights_read_per_token(model: Llama) -> tuple[int, int]:
    """(bytes, parameters) a decode step must read and multiply: every matrix, plus the embedding
    table only where it is also the output head (an untied table is looked up one row per token)."""
    tied = model.config.tie_embeddings
    params = [p for name, p in model.named_parameters() if tied or name != "embed_tokens.weight"]
    return sum(p.numel() * p.element_size() for p in params), sum(p.numel() for p in params)


def mixed_lengths(plan: Plan) -> list[int]:
    rng = random.Random(SEED + 1)
    return [rng.randint(*plan.mixed_lengths) for _ in range(plan.mixed_requests)]


def time_transformers(hf, tokenizer, plan: Plan, vocab: int) -> dict:
    """transformers generate: batch 1, one static batch, and the mixed load in static batches."""
    one = static_batch_generate(hf, tokenizer, [as_text(random_prompts(1, plan.prompt_tokens, vocab, 7)[0])],
                                plan.output_tokens)
    batch_prompts = [as_text(p) for p in random_prompts(plan.static_batch, plan.prompt_tokens, vocab, 8)]
    full = static_batch_generate(hf, tokenizer, batch_prompts, plan.output_tokens)
    lengths = mixed_lengths(plan)
    prompts = [as_text(p) for p in random_prompts(len(lengths), plan.prompt_tokens, vocab, 9)]
    seconds = 0.0
    for start in range(0, len(lengths), plan.static_batch):
        batch = lengths[start:start + plan.static_batch]  # runs until its longest request is done
        seconds += static_batch_generate(hf, tokenizer, prompts[start:start + plan.static_batch], max(batch)).total_s
    decode = (one.total_s - one.time_to_first_token_s) / (plan.output_tokens - 1)
    return {"batch_1": {"tokens_per_s": round(one.tokens_per_s, 2), "decode_ms_per_token": round(1e3 * decode, 3)},
            f"static_{plan.static_batch}": {"tokens_per_s": round(full.tokens_per_s, 2)},
            f"static_{plan.static_batch}_mixed": {"requests": len(lengths), "useful_tokens": sum(lengths),
                                                  "seconds": round(seconds, 3),
                                                  "useful_tokens_per_s": round(sum(lengths) / seconds, 2)}}


def engine_run(llm: LLM, prompts: list[list[int]], lengths: list[int], device: str) -> dict:
    """All requests at once through the engine; wall-clock tokens/s and the median decode gap."""
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in lengths]
    _sync(device)
    start = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    _sync(device)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    gaps = [o.metrics.time_per_output_token for o in outputs if o.metrics.time_per_output_token]
    return {"requests": len(prompts), "output_tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 2), "median_decode_ms": round(1e3 * statistics.median(gaps), 3)}


def time_engine(course: Llama, tokenizer, plan: Plan, vocab: int) -> dict:
    """The engine at each concurrency (fixed lengths), then with ``static_batch`` running on the mixed load."""
    longest = plan.prompt_tokens + max(plan.output_tokens, plan.mixed_lengths[1])
    block = 16
    blocks_per_seq = -(-longest // block)
    widest = max(plan.concurrency)
    sizes = dict(block_size=block, max_model_len=blocks_per_seq * block,
                 max_num_batched_tokens=max(widest, 8 * plan.prompt_tokens))
    llm = LLM.from_model(course, tokenizer, num_blocks=widest * blocks_per_seq + 8, max_num_seqs=widest, **sizes)
    engine_run(llm, random_prompts(2, plan.prompt_tokens, vocab, 10), [4, 4], plan.device)  # warm-up
    sweep = {}
    for n in plan.concurrency:
        prompts = random_prompts(n, plan.prompt_tokens, vocab, 100 + n)
        sweep[f"concurrent_{n}"] = engine_run(llm, prompts, [plan.output_tokens] * n, plan.device)
    del llm
    lengths = mixed_lengths(plan)
    llm = LLM.from_model(course, tokenizer, num_blocks=plan.static_batch * blocks_per_seq + 8,
                         max_num_seqs=plan.static_batch, **sizes)
    mixed = engine_run(llm, random_prompts(len(lengths), plan.prompt_tokens, vocab, 9), lengths, plan.device)
    mixed["useful_tokens_per_s"] = mixed["tokens_per_s"]
    return {**sweep, f"max_{plan.static_batch}_mixed": mixed}


def goal(measured: float, target: float) -> dict:
    return {"goal": target, "measured": round(measured, 3), "met": measured >= target,
            "missed_by": round(max(0.0, target - measured), 3)}


def measure_performance(plan: Plan, hf, course: Llama) -> dict:
    vocab = course.config.vocab_size
    tokenizer = numbered_tokenizer(vocab)
    bandwidth = memory_bandwidth(plan.copy_bytes, device=plan.device)
    flops = matmul_flops(plan.matmul_n, dtype=plan.dtype, device=plan.device)
    read_bytes, matmul_params = weights_read_per_token(course)
    hf_times = time_transformers(hf, tokenizer, plan, vocab)
    engine = time_engine(course, tokenizer, plan, vocab)
    plain_step = decode_step_seconds(course, 1, plan.prompt_tokens)
    ideal_step = read_bytes / bandwidth

    def flop_share(tokens_per_s: float) -> float:
        return round(2 * matmul_params * tokens_per_s / flops, 4)

    for name, run in engine.items():
        if name.startswith("concurrent_"):
            decode_rate = run["requests"] / (run["median_decode_ms"] / 1e3)
            run["decode_tokens_per_s"] = round(decode_rate, 2)
            run["share_of_matmul_flops"] = flop_share(decode_rate)
    batch_1 = {"ideal_ms": round(1e3 * ideal_step, 3),
               "engine_share": round(ideal_step / (engine["concurrent_1"]["median_decode_ms"] / 1e3), 4),
               "course_model_share": round(ideal_step / plain_step, 4),
               "course_model_ms": round(1e3 * plain_step, 3),
               "transformers_share": round(ideal_step / (hf_times["batch_1"]["decode_ms_per_token"] / 1e3), 4)}
    static = hf_times[f"static_{plan.static_batch}_mixed"]["useful_tokens_per_s"]
    ours = engine[f"max_{plan.static_batch}_mixed"]["useful_tokens_per_s"]
    return {
        "shape": plan.shape, "dtype": str(plan.dtype).removeprefix("torch."), "prompt_tokens": plan.prompt_tokens,
        "output_tokens": plan.output_tokens, "mixed_output_lengths": list(plan.mixed_lengths),
        "roofline": {"bandwidth_gb_s": round(bandwidth / 1e9, 1), "matmul_tflops": round(flops / 1e12, 3),
                     "weights_read_gb": round(read_bytes / 1e9, 3), "matmul_parameters": matmul_params},
        "transformers": hf_times, "engine": engine, "batch_1_bandwidth": batch_1,
        "goals": {"batch_1_decode_share_of_bandwidth_roofline": goal(batch_1["engine_share"], GOAL_BANDWIDTH_SHARE),
                  f"engine_over_static_{plan.static_batch}_mixed": goal(ours / static, GOAL_OVER_STATIC)},
    }


# ---------------------------------------------------------------- the run


def third_party_distributions() -> list[str]:
    """Distributions whose modules this process imported (the script must run on a bare CUDA image)."""
    owners = metadata.packages_distributions()
    names = {m.split(".")[0] for m in list(sys.modules)}
    return sorted({dist for name in names for dist in owners.get(name, [])} - {"llm-course"})


def run(plan: Plan) -> dict:
    started = time.perf_counter()
    if plan.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 checks in true float32
        torch.backends.cudnn.allow_tf32 = False
    small = random_transformers_model(SMALL, plan.device, SEED)
    vocab = small.config.vocab_size
    ids = torch.tensor(random_prompts(2, 48, vocab, 1), device=plan.device)
    checks = {}
    checks["logits_small"], course_small = check_logits(small, ids, torch.float32)
    prompts = [p[:n] for p, n in zip(random_prompts(4, 64, vocab, 2), (5, 17, 33, 64), strict=True)]
    checks["engine_greedy"] = check_engine_greedy(small, course_small, numbered_tokenizer(vocab), prompts, 24)
    checks["tiled_attention"] = check_attention(plan.device)
    checks["nf4"] = check_nf4(plan.device)
    if plan.shape == SMALL:
        hf, course = small, course_small
    else:
        del small, course_small
        hf = random_transformers_model(plan.shape, plan.device, SEED)
        big_ids = torch.tensor(random_prompts(1, 32, hf.config.vocab_size, 3), device=plan.device)
        checks[f"logits_{plan.shape}"], course = check_logits(hf, big_ids, plan.dtype)
    performance = measure_performance(plan, hf, course)
    passed = all(c.get("passed", True) for c in checks.values())  # a skipped check has no verdict
    return {"mode": plan.device, "passed": passed, "checks": checks, "performance": performance,
            "third_party_imports": third_party_distributions(), "elapsed_s": round(time.perf_counter() - started, 1)}


def print_summary(result: dict) -> None:
    print(f"gpu-check ({result['mode']}): {'all checks passed' if result['passed'] else 'A CHECK FAILED'}, "
          f"{result['elapsed_s']} s")
    for name, check in result["checks"].items():
        verdict = "skipped: " + check["skipped"] if "skipped" in check else ("ok" if check["passed"] else "FAILED")
        print(f"  {name:<28} {verdict}")
    p = result["performance"]
    print(f"  {p['shape']} in {p['dtype']}: bandwidth {p['roofline']['bandwidth_gb_s']} GB/s, "
          f"matmul {p['roofline']['matmul_tflops']} TFLOP/s")
    for name, run_ in {**p["transformers"], **p["engine"]}.items():
        rate = run_.get("useful_tokens_per_s", run_.get("tokens_per_s"))
        print(f"  {name:<28} {rate:>10.1f} tok/s")
    for name, g in p["goals"].items():
        missed = "" if g["met"] else f", missed by {g['missed_by']}"
        print(f"  goal {name}: {g['measured']} (goal {g['goal']}{missed})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                        help="auto: CUDA where there is one, else the CPU mode")
    parser.add_argument("--out", type=Path, help="where to write the JSON (default: by mode, under benchmarks/results)")
    args = parser.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no CUDA device visible to torch")
    plan = PLANS[device]
    torch.manual_seed(SEED)
    result = run(plan)
    record_benchmark(args.out or plan.out, "gpu_check", **result)
    print_summary(result)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
