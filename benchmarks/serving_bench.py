"""The serving engine against transformers' generate, one run on this machine (CPU here).

Three measurements, all greedy with end-of-text ignored so every request produces exactly the
tokens it asked for:

1. **16 concurrent requests, 64 tokens each**: our engine (continuous batching over a paged KV
   cache) against sequential ``generate``, one request at a time (throughput of the sequential
   baseline measured on its first 4 requests: the same work per request, so the same tokens/s).
   Target: at least 5x the output tokens/s.
2. **mixed lengths**: 96 requests whose output lengths are drawn from 16 to 256, batch size 16
   for both: transformers' static batches (each batch of 16 runs until its longest request is
   done; the shorter ones ride along as padding) against the engine with ``max_num_seqs=16``
   (a finished request's place is taken at the next step). Useful tokens/s, target 1.5x.
   The speedup is the product of two recorded factors: ``fewer_steps``, static batching's
   forward passes over the engine's (scheduling: no step is spent on a finished request; the
   last long requests still decode almost alone at the end, the "tail", which caps this factor
   near 1.5x for this mix), and ``cheaper_steps``, the time of a static step over the time of an
   engine step (the engine's weights are stacked and prepacked for oneDNN or MKL, see
   ``course_utils/serving/fused_model.py``, and its decode attention reads the paged pool in
   place, ``course_utils/serving/paged_kernel.py``).
3. **decode FLOP/s**: 2 x parameters FLOPs per generated token, at the engine's decode rate,
   as a share of this machine's measured float32 matmul FLOP/s.
4. **64 concurrent decodes**: the median time of a decode step with 64 running sequences (after
   their prefill; the JSON records the contexts' lengths), the same FLOP/s share (goal 0.6) against
   the best matmul timed between those steps, and where the step's time goes
   (:func:`course_utils.serving.step_profile.profile_steps`: weight matmuls, attention,
   elementwise, other); the compiled in-place decode attention and the gather path take turns in
   blocks of 10 steps, so the JSON compares the two in the same run, and so does a third path,
   ``in_place_operators``: in place, with the elementwise work as PyTorch operators instead of
   the compiled loops (``elementwise_loops_speedup``). ``weights_alone`` times the
   engine's own weight matmuls with nothing between them, on 64 rows, between the same blocks: the
   share a step could reach if attention, elementwise work and Python took no time at all (the
   model's 0.5 GB of weights come from memory at every step; the roof's matrices stay in cache),
   with the library the engine measured faster for a full batch of 64 rows (MKL or oneDNN), and
   the other library's pass beside it (``median_ms_by_library``). ``weights_and_kv_floor`` adds
   the time to read the step's KV cache once (every layer's keys and values of every context
   token) at the best copy bandwidth measured between the same blocks: the least a step of this
   engine (whole layers, one after the other) can take.
   Where either ceiling is below the goal (``goal_within_reach`` false), no step of this engine
   can meet the goal on that machine.

5. **llama.cpp beside it** (where the optional ``anchor`` extra is installed): the 16 requests of
   (1) sent at once to llama.cpp's server, ``course_utils/serving/llama_cpp_anchor.py``, on the
   course's GGUF as shipped and on the same file de-quantized to float32 (the engine's weights):
   output tokens/s, one request's rate alone, and how many greedy answers equal the engine's.

Writes benchmarks/results/serving.json.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

from course_utils.defaults import DEFAULT_MODEL

RESULTS = Path(__file__).parent / "results" / "serving.json"
TARGET_CONCURRENT, TARGET_MIXED = 5.0, 1.5
GOAL_SHARE_64 = 0.6  # issue 27's goal for the decode share of matmul FLOP/s at 64 sequences
MIXED_REQUESTS, BATCH = 96, 16
WIDE, WARM_STEPS, TIMED_STEPS, BLOCK_STEPS, PROFILED_STEPS = 64, 10, 30, 10, 20


def decode_at_64(hf_model, tokenizer, prompts: list[str]) -> dict:
    """Median decode step with WIDE sequences running, its FLOP/s share and its time breakdown.

    Decode attention read in place by the compiled kernel and the gather path (blocks copied,
    then SDPA per group) take turns in blocks of BLOCK_STEPS consecutive steps, the machine's
    matmul roof timed between blocks: both paths and the roof are measured under the same
    conditions, and each path's steps follow its own steps, as in serving.
    """
    from course_utils.architecture.transformer import Llama
    from course_utils.serving import LLM, SamplingParams
    from course_utils.serving.fused_model import FusedLlama
    from course_utils.serving.paged_kernel import kernel_status
    from course_utils.serving.prepacked import can_pack_for_mkl
    from course_utils.serving.roofline import matmul_flops, memory_bandwidth
    from course_utils.serving.step_profile import profile_steps

    llm = LLM.from_model(Llama.from_hf(hf_model), tokenizer, num_blocks=1024, block_size=16, max_model_len=512,
                         max_num_seqs=WIDE)
    engine, cache = llm.engine, llm.engine.runner.cache
    kernel = cache.in_place  # False where no C compiler built the kernel: then only the gather path runs
    # the paths that take turns: attention in place or gathered; the in-place one also with the
    # elementwise work as PyTorch operators instead of the compiled loops, where those were built
    fused = engine.runner.forward_model if isinstance(engine.runner.forward_model, FusedLlama) else None
    loops = fused is not None and fused.fuse_elementwise
    paths = {"in_place": [], "gather": []} if kernel else {"gather": []}
    if kernel and loops:
        paths["in_place_operators"] = []

    def take(path: str) -> None:
        """Set the engine up for the steps of ``path``."""
        cache.in_place = path.startswith("in_place")
        if loops:
            fused.fuse_elementwise = path != "in_place_operators"

    # room for the steps below after the last prefill: the first requests to start must not end during them
    params = SamplingParams(temperature=0, max_tokens=64 + WARM_STEPS + len(paths) * (TIMED_STEPS + PROFILED_STEPS),
                            ignore_eos=True)
    seqs = [engine.add_request(tokenizer(p, add_special_tokens=False)["input_ids"], params) for p in prompts[:WIDE]]
    while any(not s.output_token_ids for s in seqs):  # prefill everyone
        engine.step()
    for _ in range(WARM_STEPS):
        engine.step()
    shortest = min(len(s) for s in seqs)
    # the same weights packed for the library the engine did not choose for a full batch, timed beside it
    other = None
    if fused is not None and can_pack_for_mkl():
        library = next(lib for lib in FusedLlama.FULL_BATCH_LIBRARIES if lib != fused.full_batch)
        other = FusedLlama(engine.runner.model, WIDE, full_batch=library)
    matmul, weights_alone, weights_other, bandwidth, context = [], [], [], [], []
    for _ in range(TIMED_STEPS // BLOCK_STEPS):
        for path, times in paths.items():
            matmul += [matmul_flops(repeats=1) for _ in range(2)]
            bandwidth.append(memory_bandwidth(repeats=2))
            if fused is not None:  # a stacked, prepacked forward (the CPU's): time its matmuls alone
                weights_alone += [fused.weights_pass_seconds(WIDE) for _ in range(2)]
            if other is not None:
                weights_other += [other.weights_pass_seconds(WIDE) for _ in range(2)]
            take(path)
            for _ in range(BLOCK_STEPS):
                assert len(engine.scheduler.running) == WIDE
                context.append(sum(len(s) for s in seqs))  # tokens whose keys and values this step reads
                start = time.perf_counter()
                engine.step()
                times.append(time.perf_counter() - start)
    roof = max(matmul)  # the roof: the best matmul seen during the run (as matmul_flops, best of its repeats)
    n_params = sum(p.numel() for p in hf_model.parameters())
    result = {"sequences": WIDE, "decode_kernel": kernel_status(), "timed_steps_per_path": TIMED_STEPS,
              "matmul_gflops_best": round(roof / 1e9, 2),
              "matmul_gflops_median": round(statistics.median(matmul) / 1e9, 2), "goal": GOAL_SHARE_64}
    if weights_alone:  # the ceiling: the share a step would reach if nothing but its weight matmuls took time
        alone = statistics.median(weights_alone)
        ceiling = 2 * n_params * WIDE / alone / roof
        result["weights_alone"] = {"median_ms": round(1e3 * alone, 1), "passes": len(weights_alone),
                                   "share_of_matmul": round(ceiling, 3),
                                   # below the goal, no step can meet it here: the weight matmuls alone fall short
                                   "goal_within_reach": ceiling >= GOAL_SHARE_64,
                                   "full_batch_library": fused.full_batch}
        # the KV cache a step reads (every layer's keys and values of every context token), at the
        # best copy bandwidth seen: added to the weights pass, the least time this engine's step can take
        c = engine.runner.model.config
        kv_bytes = statistics.median(context) * c.n_layers * 2 * c.n_kv_heads * c.head_dim * cache.k.element_size()
        floor = alone + kv_bytes / max(bandwidth)
        floor_share = 2 * n_params * WIDE / floor / roof
        result["weights_and_kv_floor"] = {
            "kv_mb_per_step": round(kv_bytes / 1e6, 1), "copy_bandwidth_gb_s": round(max(bandwidth) / 1e9, 1),
            "floor_ms": round(1e3 * floor, 1), "share_of_matmul": round(floor_share, 3),
            "goal_within_reach": floor_share >= GOAL_SHARE_64}
        if other is not None:  # the choice the engine measured at start, checked over the whole run
            by_library = {fused.full_batch: alone, other.full_batch: statistics.median(weights_other)}
            result["weights_alone"]["median_ms_by_library"] = {k: round(1e3 * v, 1) for k, v in by_library.items()}
            result["weights_alone"]["faster_library"] = min(by_library, key=by_library.get)
    for path, times in paths.items():
        take(path)
        breakdown = profile_steps(engine, PROFILED_STEPS)
        assert breakdown.sequences == WIDE and len(engine.scheduler.running) == WIDE
        step = statistics.median(times)
        share = 2 * n_params * WIDE / step / roof
        result[path] = {"median_step_ms": round(1e3 * step, 1),
                        "step_ms_range": [round(1e3 * min(times), 1), round(1e3 * max(times), 1)],
                        "tokens_per_s": round(WIDE / step, 1), "share_of_matmul": round(share, 3),
                        "beyond_weights_alone_ms": round(1e3 * (step - alone), 1) if weights_alone else None,
                        "meets_goal": share >= GOAL_SHARE_64, "breakdown_profiled": breakdown.as_dict()}
    result["context_tokens"] = {"min": shortest, "max": max(len(s) for s in seqs)}  # first timed step, last profiled
    if kernel:
        result["in_place_speedup"] = round(result["gather"]["median_step_ms"] / result["in_place"]["median_step_ms"], 2)
    if "in_place_operators" in result:  # the compiled elementwise loops against PyTorch's operators, same run
        result["elementwise_loops_speedup"] = round(
            result["in_place_operators"]["median_step_ms"] / result["in_place"]["median_step_ms"], 2)
    take("in_place" if kernel else "gather")  # the engine as it was: the default path
    best = result["in_place" if kernel else "gather"]
    result["share_of_matmul"], result["meets_goal"] = best["share_of_matmul"], best["meets_goal"]
    return result


def answer(tokenizer, output) -> str:
    """A request's text up to its first end-of-text token (``ignore_eos`` runs past it; llama.cpp's
    ``min_tokens`` instead bans that token, so the two agree only up to there)."""
    ids = output.outputs[0].token_ids
    end = ids.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in ids else len(ids)
    return tokenizer.decode(ids[:end], skip_special_tokens=True)


def llama_cpp_beside(prompts: list[str], max_tokens: int, engine_tps: float, engine_answers: list[str]) -> dict:
    """llama.cpp's server on the same prompts, all sent at once, on the course's GGUF as it is and
    de-quantized to float32 (the engine's own weights); skipped, with the reason, where the optional
    extra is not installed. ``same_answer_as_engine``: requests whose text begins with the engine's
    greedy answer (up to its end-of-text), out of all of them."""
    import tempfile

    import torch

    from course_utils import assets
    from course_utils.serving.llama_cpp_anchor import LlamaCppServer, dequantized_gguf, llama_cpp_missing

    missing = llama_cpp_missing()
    if missing:
        print(f"llama.cpp anchor skipped: {missing}")
        return {"ran": False, "why": missing}
    from importlib.metadata import version

    result = {"ran": True, "llama_cpp_python": version("llama_cpp_python"), "requests": len(prompts),
              "max_tokens": max_tokens, "threads": torch.get_num_threads(), "engine_tokens_per_s": round(engine_tps, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        asset = assets.asset_path(DEFAULT_MODEL)
        files = {"gguf_as_shipped": asset, "float32": dequantized_gguf(asset, Path(tmp) / "float32.gguf")}
        for label, path in files.items():
            result[label] = {"file_mb": round(path.stat().st_size / 1e6, 1)}
            try:
                with LlamaCppServer(path, threads=result["threads"]) as server:
                    server.completions(prompts[-1:], 2)  # warm-up (llama.cpp then reuses the shared chat prefix)
                    alone = server.completions(prompts[:1], max_tokens)["tokens_per_s"]
                    run = server.completions(prompts, max_tokens)
            except RuntimeError as err:  # recorded, not fatal: a crash of llama.cpp is a finding of the run
                result[label]["failed"] = str(err)
                continue
            texts = run.pop("texts")
            run["one_request_alone_tokens_per_s"] = alone  # nothing else in flight: sixteen at once gain nothing on it
            run["engine_speedup"] = round(engine_tps / run["tokens_per_s"], 2)
            run["same_answer_as_engine"] = sum(t.startswith(a) for t, a in zip(texts, engine_answers, strict=True))
            result[label].update(run)
    return result


def main() -> None:
    from course_utils.architecture.transformer import Llama
    from course_utils.environment import record_benchmark
    from course_utils.models import load_model
    from course_utils.serving import LLM, SamplingParams
    from course_utils.serving.baselines import static_batch_generate
    from course_utils.serving.roofline import matmul_flops
    from course_utils.tasks import load_task

    hf_model, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    # the engine runs a from-scratch copy of the same weights: one load serves both sides
    llm = LLM.from_model(Llama.from_hf(hf_model), tokenizer, num_blocks=1024, block_size=16, max_model_len=512,
                         max_num_seqs=16)
    questions = [r["question"] for r in load_task("arithmetic")]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True) for q in questions]

    static_batch_generate(hf_model, tokenizer, prompts[:2], 4)  # warm-up
    llm.generate(prompts[:2], SamplingParams(temperature=0, max_tokens=4))

    # 1. concurrency 16, 64 tokens each
    sequential_tps = 4 * 64 / sum(static_batch_generate(hf_model, tokenizer, [p], 64).total_s for p in prompts[:4])
    start = time.perf_counter()
    outs_16 = llm.generate(prompts[:16], SamplingParams(temperature=0, max_tokens=64, ignore_eos=True))
    engine_s = time.perf_counter() - start
    engine_tps = sum(len(o.outputs[0].token_ids) for o in outs_16) / engine_s
    ttfts = sorted(o.metrics.time_to_first_token for o in outs_16)

    # 2. mixed output lengths, batch size 16
    rng = random.Random(0)
    lengths = [rng.randint(16, 256) for _ in range(MIXED_REQUESTS)]
    mixed = prompts[16:16 + MIXED_REQUESTS]
    static_s = sum(static_batch_generate(hf_model, tokenizer, mixed[i:i + BATCH], max(lengths[i:i + BATCH])).total_s
                   for i in range(0, len(mixed), BATCH))
    static_steps = sum(max(lengths[i:i + BATCH]) for i in range(0, len(lengths), BATCH))
    padded = sum(max(lengths[i:i + BATCH]) * len(lengths[i:i + BATCH]) for i in range(0, len(lengths), BATCH))
    steps_before, start = llm.engine.num_steps, time.perf_counter()
    outs = llm.generate(mixed, [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in lengths])
    continuous_s = time.perf_counter() - start
    engine_steps = llm.engine.num_steps - steps_before
    assert [len(o.outputs[0].token_ids) for o in outs] == lengths
    useful = sum(lengths)

    # 3. decode FLOP/s against the machine's matmul FLOP/s
    params = sum(p.numel() for p in hf_model.parameters())
    matmul = matmul_flops()
    decode_flops = 2 * params * engine_tps

    result = {
        "model": f"{DEFAULT_MODEL} (float32)", "parameters": params,
        "concurrent_16x64": {"sequential_generate_tokens_per_s": round(sequential_tps, 2),
                             "engine_tokens_per_s": round(engine_tps, 2),
                             "speedup": round(engine_tps / sequential_tps, 2),
                             "engine_ttft_p50_s": round(ttfts[len(ttfts) // 2], 3),
                             "engine_ttft_max_s": round(ttfts[-1], 3), "target": TARGET_CONCURRENT},
        "mixed_lengths": {"requests": MIXED_REQUESTS, "batch_size": BATCH,
                          "output_lengths": {"min": min(lengths), "max": max(lengths), "sum": useful},
                          "static_token_slots": padded,
                          "static_batches_s": round(static_s, 2),
                          "continuous_batching_s": round(continuous_s, 2),
                          "static_useful_tokens_per_s": round(useful / static_s, 2),
                          "engine_useful_tokens_per_s": round(useful / continuous_s, 2),
                          "static_steps": static_steps, "engine_steps": engine_steps,
                          "fewer_steps": round(static_steps / engine_steps, 2),
                          "static_ms_per_step": round(1000 * static_s / static_steps, 1),
                          "engine_ms_per_step": round(1000 * continuous_s / engine_steps, 1),
                          "cheaper_steps": round((static_s / static_steps) / (continuous_s / engine_steps), 2),
                          "speedup": round(static_s / continuous_s, 2), "target": TARGET_MIXED},
        "decode_64": decode_at_64(hf_model, tokenizer, prompts[:WIDE]),
        "llama_cpp": llama_cpp_beside(prompts[:16], 64, engine_tps, [answer(tokenizer, o) for o in outs_16]),
        "decode_flops": {"engine_decode_flops_per_s": round(decode_flops / 1e9, 2),
                         "matmul_flops_per_s": round(matmul / 1e9, 2), "unit": "GFLOP/s",
                         "share_of_matmul": round(decode_flops / matmul, 3),
                         "note": "2 x parameters FLOPs per token at 16 concurrent requests"},
    }
    result["meets_target"] = (result["concurrent_16x64"]["speedup"] >= TARGET_CONCURRENT
                              and result["mixed_lengths"]["speedup"] >= TARGET_MIXED)
    result = record_benchmark(RESULTS, "serving", **result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    d64 = result["decode_64"]
    floor = d64.get("weights_and_kv_floor")
    print(f"64 sequences: {d64['share_of_matmul']:.3f} of matmul FLOP/s, goal {GOAL_SHARE_64} "
          f"{'met' if d64['meets_goal'] else 'not met'}" + ("" if floor is None else
          f"; the weight matmuls alone plus reading the KV cache at copy bandwidth would reach "
          f"{floor['share_of_matmul']:.3f}, so the goal is {'within' if floor['goal_within_reach'] else 'out of'} "
          "reach of this engine on this machine"))
    if not result["meets_target"]:
        raise SystemExit("a speedup is below its target")


if __name__ == "__main__":
    main()
