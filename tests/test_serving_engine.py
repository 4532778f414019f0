"""The paged, continuously batched engine against transformers' own greedy decoding."""

import pytest
import torch

from course_utils.serving import LLM, SamplingParams
from course_utils.serving.config import EngineConfig

PROMPTS = ["The capital of France is", "Once upon a time, in a small village by the sea,", "def fibonacci(n):",
           "1, 2, 3, 4,", "Water boils at"]


def _transformers_greedy(smollm2, prompt: str, n: int) -> list[int]:
    """transformers' greedy continuation of ``prompt``, exactly ``n`` tokens, end-of-text ignored."""
    model, tokenizer = smollm2
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)[0, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def reference(smollm2):
    """transformers' greedy continuation of each prompt, 20 tokens, end-of-text ignored."""
    return {prompt: _transformers_greedy(smollm2, prompt, 20) for prompt in PROMPTS}


GREEDY = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)


def test_batched_greedy_output_is_token_identical_to_transformers(reference):
    llm = LLM(num_blocks=64, block_size=8, max_model_len=256)
    outputs = llm.generate(PROMPTS, GREEDY)
    for prompt, out in zip(PROMPTS, outputs, strict=True):
        assert out.prompt == prompt and out.outputs[0].token_ids == reference[prompt]
        assert out.outputs[0].finish_reason == "length" and out.finished
        assert out.metrics.time_to_first_token > 0 and out.metrics.time_per_output_token > 0
    assert llm.engine.manager.num_free_blocks == 64  # every block came back


def test_a_pool_too_small_for_the_load_preempts_and_still_matches(reference):
    llm = LLM(num_blocks=10, block_size=4, max_model_len=40, enable_prefix_caching=False)
    outputs = llm.generate(PROMPTS, GREEDY)
    assert llm.engine.scheduler.preemptions > 0
    assert [o.outputs[0].token_ids for o in outputs] == [reference[p] for p in PROMPTS]
    assert llm.engine.manager.num_free_blocks == 10


def test_prefix_caching_skips_the_shared_prompt_and_keeps_the_output(reference):
    llm = LLM(num_blocks=64, block_size=4, max_model_len=256)
    shared = "You are a helpful assistant. Answer briefly and politely. " * 2
    first, second = llm.generate([shared + PROMPTS[0]], GREEDY)[0], None
    seq = llm.engine.add_request(llm.tokenizer(shared + PROMPTS[4], add_special_tokens=False)["input_ids"], GREEDY)
    assert seq.num_cached_tokens == 0  # not allocated yet
    while llm.engine.has_unfinished:
        llm.engine.step()
        second = second or seq.num_cached_tokens
    assert second >= 4 * (len(llm.tokenizer(shared, add_special_tokens=False)["input_ids"]) // 4 - 1)
    assert first.outputs[0].token_ids == LLM(num_blocks=64, block_size=4, max_model_len=256,
                                             enable_prefix_caching=False).generate([shared + PROMPTS[0]],
                                                                                   GREEDY)[0].outputs[0].token_ids


def test_stops_seeds_and_limits():
    llm = LLM(num_blocks=64, block_size=8, max_model_len=64)
    [counted] = llm.generate("1, 2, 3, 4,", SamplingParams(temperature=0, max_tokens=30, stop=[" 8"]))
    assert counted.outputs[0].finish_reason == "stop" and counted.outputs[0].text == " 5, 6, 7,"
    sampled = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=8, seed=3, ignore_eos=True)
    a = llm.generate(["Tell me a story."], sampled)[0].outputs[0].token_ids
    b = llm.generate(["Tell me a story.", "Another prompt in the batch"], [sampled, GREEDY])[0].outputs[0].token_ids
    assert a == b  # a seeded request does not depend on its batch
    [long] = llm.generate("Count: 1 2 3", SamplingParams(temperature=0, max_tokens=200, ignore_eos=True))
    assert long.outputs[0].finish_reason == "length" and len(long.prompt_token_ids) + len(
        long.outputs[0].token_ids) == 64
    with pytest.raises(ValueError, match="max_model_len"):
        llm.generate("word " * 100)
    with pytest.raises(ValueError, match="must hold"):
        LLM(num_blocks=2, block_size=4, max_model_len=64)


def test_vllm_backend_is_explained_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the vLLM path is exercised by the GPU check instead")
    with pytest.raises(RuntimeError, match="vLLM|CUDA"):
        LLM(backend="vllm")


def test_engines_built_from_one_model_share_its_weights(smollm2, reference):
    from course_utils.architecture.transformer import Llama

    model, tokenizer = smollm2
    shared = Llama.from_hf(model)
    plain = LLM.from_model(shared, tokenizer, num_blocks=64, block_size=8, max_model_len=256,
                           enable_prefix_caching=False)
    small = LLM.from_model(shared, tokenizer, num_blocks=16, block_size=4, max_model_len=64, max_num_seqs=2)
    assert plain.engine.model is small.engine.model is shared
    for llm in (plain, small):
        outputs = llm.generate(PROMPTS[:3], GREEDY)
        assert [o.outputs[0].token_ids for o in outputs] == [reference[p] for p in PROMPTS[:3]]


def test_the_static_batch_baseline_produces_every_token_and_times_the_first(smollm2):
    from course_utils.serving.baselines import static_batch_generate

    model, tokenizer = smollm2
    timing = static_batch_generate(model, tokenizer, PROMPTS[:3], 20)
    assert timing.output_tokens == 3 * 20  # end-of-text is suppressed: no request stops early
    assert 0 < timing.time_to_first_token_s < timing.total_s / 2
    assert timing.tokens_per_s == pytest.approx(60 / timing.total_s)
    tokenizer.padding_side = "right"
    try:
        with pytest.raises(ValueError, match="left-padded"):
            static_batch_generate(model, tokenizer, PROMPTS[:2], 4)
    finally:
        tokenizer.padding_side = "left"
    with pytest.raises(ValueError, match="at least one prompt"):
        static_batch_generate(model, tokenizer, [], 4)


@pytest.mark.parametrize("bad", [-1, 49152, 10**12, 2**64, True, 3.0, "7"], ids=repr)
def test_token_ids_outside_the_vocabulary_are_refused_before_anything_is_registered(smollm2, bad):
    from course_utils.architecture.transformer import Llama

    model, tokenizer = smollm2
    engine = LLM.from_model(Llama.from_hf(model), tokenizer, num_blocks=32, block_size=8, max_model_len=128).engine
    with pytest.raises(ValueError, match=r"prompt token ids must be integers in \[0, 49152\)"):
        engine.add_request([1, 2, bad], GREEDY, request_id="bad")
    assert not engine.requests and not engine.has_unfinished
    engine.add_request([1, 2, 3], GREEDY, request_id="bad")  # the id is free again: nothing stayed behind
    assert list(engine.requests) == ["bad"]


def test_a_failed_step_leaves_no_unwritten_block_for_later_prompts(smollm2, monkeypatch):
    from course_utils.architecture.transformer import Llama

    model, tokenizer = smollm2
    shared_model = Llama.from_hf(model)
    cached = LLM.from_model(shared_model, tokenizer, num_blocks=64, block_size=4, max_model_len=256)
    plain = LLM.from_model(shared_model, tokenizer, num_blocks=64, block_size=4, max_model_len=256,
                           enable_prefix_caching=False)
    system = "You are a helpful assistant. Answer briefly and politely. "
    engine = cached.engine
    engine.add_request(tokenizer(system + "Hello", add_special_tokens=False)["input_ids"], GREEDY)
    original = engine.runner.run

    def broken(*args, **kwargs):
        raise RuntimeError("simulated kernel failure")

    monkeypatch.setattr(engine.runner, "run", broken)
    [failed] = engine.step()
    assert failed.finish_reason == "error" and not engine.requests and not engine.has_unfinished
    monkeypatch.setattr(engine.runner, "run", original)
    prompts = [system + p for p in PROMPTS[:3]]
    got = [o.outputs[0].token_ids for o in cached.generate(prompts, GREEDY)]
    assert got == [o.outputs[0].token_ids for o in plain.generate(prompts, GREEDY)]
    assert engine.manager.num_free_blocks == engine.config.num_blocks


def _fresh_engine(smollm2, **engine_args):
    from course_utils.architecture.transformer import Llama

    model, tokenizer = smollm2
    return LLM.from_model(Llama.from_hf(model), tokenizer, **engine_args).engine


def test_a_request_that_breaks_the_forward_pass_fails_alone(smollm2, reference, monkeypatch):
    """The step is retried without the culprit (bisection): the others' greedy tokens are unchanged."""
    engine = _fresh_engine(smollm2, num_blocks=64, block_size=8, max_model_len=256)
    tokenizer = smollm2[1]
    seqs = [engine.add_request(tokenizer(p, add_special_tokens=False)["input_ids"], GREEDY, request_id=p)
            for p in PROMPTS]
    poison = seqs[2]
    run = engine.runner.run

    def breaks_with_poison(batch, manager, num_decode):
        if poison in batch and len(poison.output_token_ids) == 3:  # fails at its fourth token, mid-decode
            raise RuntimeError("simulated kernel failure on one request")
        return run(batch, manager, num_decode)

    monkeypatch.setattr(engine.runner, "run", breaks_with_poison)
    ended = []
    while engine.has_unfinished:
        ended += [s for s in engine.step() if s.is_finished]
    assert poison.finish_reason == "error" and len(poison.output_token_ids) == 3
    for seq in seqs:
        if seq is not poison:
            assert seq.finish_reason == "length" and seq.output_token_ids == reference[seq.request_id]
    assert {s.request_id for s in ended} == set(PROMPTS) and not engine.requests
    assert engine.manager.num_free_blocks == 64


def test_a_request_whose_sampling_fails_ends_alone(smollm2, reference, monkeypatch):
    from course_utils.serving import engine as engine_module

    tokenizer = smollm2[1]
    odd = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True, seed=7)  # greedy, marked by its seed
    seeded = SamplingParams(temperature=0.9, max_tokens=20, ignore_eos=True, seed=3)
    original = engine_module.sample

    def fails_for_seed_7(logits, params, seen, generators, outputs=None):
        out = original(logits, params, seen, generators, outputs)  # draws from every generator first, then fails
        if any(p.seed == 7 for p in params):
            raise FloatingPointError("simulated sampler failure")
        return out

    def run(with_odd: bool) -> list:
        engine = _fresh_engine(smollm2, num_blocks=64, block_size=8, max_model_len=256)
        chosen = [(p, odd if i == 1 else seeded if i == 3 else GREEDY) for i, p in enumerate(PROMPTS)]
        seqs = [engine.add_request(tokenizer(p, add_special_tokens=False)["input_ids"], sp)
                for p, sp in chosen if with_odd or sp is not odd]
        while engine.has_unfinished:
            engine.step()
        return seqs

    clean = run(with_odd=False)
    monkeypatch.setattr(engine_module, "sample", fails_for_seed_7)
    seqs = run(with_odd=True)
    assert seqs[1].finish_reason == "error" and seqs[1].output_token_ids == []
    others = seqs[:1] + seqs[2:]
    assert [s.output_token_ids for s in others] == [s.output_token_ids for s in clean]
    assert [s.output_token_ids for s in others if s.params is GREEDY] == [reference[p] for i, p in
                                                                         enumerate(PROMPTS) if i not in (1, 3)]


@pytest.mark.parametrize("budget", [64, 7])
def test_chunked_prefill_splits_long_prompts_and_keeps_the_output(smollm2, reference, budget):
    """Prompts longer than the step's token budget are prefilled over several steps, beside decodes."""
    engine = _fresh_engine(smollm2, num_blocks=128, block_size=4, max_model_len=256, max_num_seqs=4,
                           max_num_batched_tokens=budget)
    tokenizer = smollm2[1]
    long_prompt = PROMPTS[1] * 6  # ~80 tokens: several chunks at either budget
    seqs = [engine.add_request(tokenizer(p, add_special_tokens=False)["input_ids"], GREEDY) for p in PROMPTS[:3]]
    engine.step()
    late = engine.add_request(tokenizer(long_prompt, add_special_tokens=False)["input_ids"], GREEDY)
    chunks, decoded_beside_a_chunk = 0, 0
    while engine.has_unfinished:
        prefilling = late.num_computed_tokens < len(late.prompt_token_ids)
        changed = engine.step()
        if prefilling:
            chunks += 1
            decoded_beside_a_chunk += sum(s is not late for s in changed)
    assert chunks >= 2 and chunks >= len(late.prompt_token_ids) // budget
    assert [s.output_token_ids for s in seqs] == [reference[p] for p in PROMPTS[:3]]
    assert late.output_token_ids == _transformers_greedy(smollm2, long_prompt, 20)
    assert decoded_beside_a_chunk >= chunks  # the running requests kept decoding while the long prompt was split


def test_without_chunked_prefill_a_prompt_is_computed_in_one_step(smollm2):
    engine = _fresh_engine(smollm2, num_blocks=128, block_size=4, max_model_len=256, max_num_seqs=4,
                           max_num_batched_tokens=8, enable_chunked_prefill=False)
    tokenizer = smollm2[1]
    seq = engine.add_request(tokenizer(PROMPTS[1] * 2, add_special_tokens=False)["input_ids"], GREEDY)
    assert len(seq) > 8
    engine.step()
    assert seq.num_computed_tokens == len(seq) - 1 and len(seq.output_token_ids) == 1


REPETITIVE = ["1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3,", "The cat sat on the mat. The cat sat on the mat. The cat"]


def test_speculative_decoding_in_the_engine_keeps_greedy_output_and_saves_steps(smollm2):
    tokenizer = smollm2[1]
    prompts = REPETITIVE + PROMPTS[:3]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    runs = {}
    for k in (0, 4):
        engine = _fresh_engine(smollm2, num_blocks=64, block_size=4, max_model_len=256, num_speculative_tokens=k)
        seqs = [engine.add_request(tokenizer(p, add_special_tokens=False)["input_ids"], params) for p in prompts]
        finished_at = {}  # request -> the step it finished in
        while engine.has_unfinished:
            for seq in engine.step():
                if seq.is_finished:
                    finished_at[seq.request_id] = engine.num_steps
        runs[k] = engine, [s.output_token_ids for s in seqs], [finished_at[s.request_id] for s in seqs]
        assert engine.manager.num_free_blocks == 64  # rejected drafts' blocks all came back
    for prompt, got in zip(prompts, runs[4][1], strict=True):
        assert got == _transformers_greedy(smollm2, prompt, 24)
    assert runs[4][1] == runs[0][1]
    (spec, _, spec_steps), (_, _, plain_steps) = runs[4], runs[0]
    print(f"steps to finish each request: {plain_steps} -> {spec_steps}; {spec.speculation}")
    assert spec.speculation.accepted > 0
    assert all(s < p for s, p in zip(spec_steps[:2], plain_steps[:2], strict=True))  # the repetitive ones
    assert spec.speculation.emitted == spec.speculation.accepted + spec.speculation.target_passes


def test_a_draft_model_in_the_engine_keeps_greedy_output_and_its_cache_follows_the_accepted_tokens(smollm2):
    """Drafts from the target's first 10 layers (self-speculation): the same greedy tokens as
    transformers and as plain decoding, some drafts accepted, and every block and draft cache freed."""
    tokenizer = smollm2[1]
    prompts = REPETITIVE + PROMPTS[:2]
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    engine = _fresh_engine(smollm2, num_blocks=64, block_size=4, max_model_len=256, num_speculative_tokens=3,
                           speculative_draft_layers=10)
    seqs = [engine.add_request(tokenizer(p, add_special_tokens=False)["input_ids"], params) for p in prompts]
    while engine.has_unfinished:
        engine.step()
    for prompt, seq in zip(prompts, seqs, strict=True):
        assert seq.output_token_ids == _transformers_greedy(smollm2, prompt, 20), prompt
    stats = engine.speculation
    print(f"draft model: {stats.accepted}/{stats.proposed} drafts accepted, {stats.tokens_per_pass:.2f} per pass")
    assert stats.accepted > 0 and stats.emitted == stats.accepted + stats.target_passes
    assert engine.manager.num_free_blocks == 64 and not engine._model_drafts and not engine._draft_probs
    with pytest.raises(ValueError, match="speculative_draft_layers must be >= 0"):
        EngineConfig(speculative_draft_layers=-1)


def test_a_draft_that_fails_costs_its_sequence_the_speedup_not_its_reply(smollm2, monkeypatch):
    from course_utils.serving.speculative import ModelDraft

    tokenizer = smollm2[1]
    real_propose = ModelDraft.propose

    def breaks_on_a_long_context(self, gamma, temperature, generator):
        if self.cache.length + len(self.pending) > 20:  # only the longer prompt's draft gets this far
            raise RuntimeError("the draft model broke")
        return real_propose(self, gamma, temperature, generator)

    monkeypatch.setattr(ModelDraft, "propose", breaks_on_a_long_context)
    engine = _fresh_engine(smollm2, num_blocks=64, block_size=4, max_model_len=256, num_speculative_tokens=3,
                           speculative_draft_layers=10)
    prompts = ["1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3,", "Hi"]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    seqs = [engine.add_request(tokenizer(p, add_special_tokens=False)["input_ids"], params) for p in prompts]
    while engine.has_unfinished:
        engine.step()
    for prompt, seq in zip(prompts, seqs, strict=True):
        assert seq.finish_reason == "length", prompt
        assert seq.output_token_ids == _transformers_greedy(smollm2, prompt, 12), prompt
    assert engine.speculation.proposed > 0  # the short prompt kept drafting until it, too, grew past 20 tokens


def test_speculation_is_a_per_request_choice(smollm2):
    """speculative_tokens turns prompt lookup on for one request in an engine that has it off, and off
    for one request in an engine that has it on; greedy tokens are the same either way."""
    tokenizer = smollm2[1]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in REPETITIVE]

    def run(engine_k: int, request_k: list[int | None]):
        engine = _fresh_engine(smollm2, num_blocks=64, block_size=4, max_model_len=256, num_speculative_tokens=engine_k)
        greedy = [SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, speculative_tokens=k)
                  for k in request_k]
        seqs = [engine.add_request(i, params) for i, params in zip(ids, greedy, strict=True)]
        steps = {}
        while engine.has_unfinished:
            for seq in engine.step():
                if seq.is_finished:
                    steps[seq.request_id] = engine.num_steps
        assert engine.manager.num_free_blocks == 64
        return [s.output_token_ids for s in seqs], [steps[s.request_id] for s in seqs], engine.speculation

    plain_tokens, plain_steps, plain = run(0, [None, None])
    opt_in_tokens, opt_in_steps, opt_in = run(0, [4, 0])  # only the first request drafts
    opt_out_tokens, opt_out_steps, opt_out = run(4, [0, None])  # only the second request drafts
    assert plain.proposed == 0 and opt_in.accepted > 0 and opt_out.accepted > 0
    assert plain_tokens == opt_in_tokens == opt_out_tokens
    assert opt_in_steps[0] < plain_steps[0] and opt_out_steps[1] < plain_steps[1]  # the drafting one finished sooner
    assert opt_in_steps[1] == plain_steps[1] and opt_out_steps[0] == plain_steps[0] == 24  # the other: a token a step
    for bad in (-1, 17, 2.5, True):
        with pytest.raises(ValueError, match="speculative_tokens must be None or an integer in"):
            SamplingParams(speculative_tokens=bad)


def test_speculative_sampling_draws_from_the_targets_distribution():
    """On a tiny random model, the four sampled tokens after a repetitive prompt have the same joint
    distribution with and without drafts, from prompt lookup and from a draft model (the target's
    first layer), chi-square test, 3,000 requests each; a wrong rule (every draft accepted) is caught
    by the same test."""
    from scipy.stats import chi2_contingency

    from course_utils.architecture.transformer import Llama, LlamaConfig
    from course_utils.serving.config import EngineConfig
    from course_utils.serving.engine import LLMEngine

    class Tokenizer:
        eos_token_id = None

        def decode(self, ids, skip_special_tokens=True):
            return ""

    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=6, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64))
    model.init_weights(std=1.0)  # peaked enough that drafts are often right, spread enough to sample
    greedy = [4, 0, 2, 4, 0, 4]  # this model's greedy continuation of [1]
    prompt = [1, *greedy, 1, *greedy[:2]]  # the lookup drafts what followed [1, 4, 0] before

    def outcomes(k: int, draft_layers: int = 0, n: int = 3000) -> list[tuple[int, ...]]:
        engine = LLMEngine(model, Tokenizer(), EngineConfig(num_blocks=2400, block_size=4, max_model_len=32,
                                                            max_num_seqs=256, num_speculative_tokens=k,
                                                            speculative_draft_layers=draft_layers))
        seqs = [engine.add_request(prompt, SamplingParams(temperature=1.0, max_tokens=4, seed=i)) for i in range(n)]
        while engine.has_unfinished:
            engine.step()
        assert k == 0 or engine.speculation.accepted > engine.speculation.proposed / 5  # drafts were tested
        assert not engine._model_drafts and not engine._draft_probs  # no draft state outlives its sequence
        return [tuple(s.output_token_ids) for s in seqs]

    reference = LLMEngine(model, Tokenizer(), EngineConfig(num_blocks=64, block_size=4, max_model_len=32))
    seq = reference.add_request([1], SamplingParams(temperature=0, max_tokens=6))
    while reference.has_unfinished:
        reference.step()
    assert seq.output_token_ids == greedy

    def p_value(a: list, b: list) -> float:
        keys = sorted(set(a) | set(b))
        table = [[a.count(key) for key in keys], [b.count(key) for key in keys]]
        keep = [i for i in range(len(keys)) if table[0][i] + table[1][i] >= 5]  # chi-square needs counts
        return chi2_contingency([[row[i] for i in keep] for row in table]).pvalue

    plain = outcomes(0)
    for draft_layers in (0, 1):  # prompt lookup, then a draft model
        same = p_value(plain, outcomes(2, draft_layers))
        print(f"chi-square p, plain vs speculative with draft layers {draft_layers}: {same:.3f}")
        assert same > 0.001
    from course_utils.serving import engine as engine_module

    real_verify = engine_module.verify

    def accept_everything(probs, drafts, draft_probs, generator, greedy):
        emitted, _ = real_verify(probs[len(drafts):], [], None, generator, greedy)
        return drafts + emitted, len(drafts)

    engine_module.verify = accept_everything
    try:
        wrong = [outcomes(2, draft_layers) for draft_layers in (0, 1)]
    finally:
        engine_module.verify = real_verify
    for outcome in wrong:
        print(f"chi-square p, plain vs every draft accepted: {p_value(plain, outcome):.2e}")
        assert p_value(plain, outcome) < 0.001


def test_a_reply_that_ends_on_end_of_text_keeps_its_whole_text(smollm2):
    """The text held back for a character's missing bytes is flushed on every kind of ending."""
    engine = _fresh_engine(smollm2, num_blocks=64, block_size=8, max_model_len=256)
    tokenizer = smollm2[1]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."}], tokenize=False,
                                           add_generation_prompt=True)
    seq = engine.add_request(tokenizer(prompt, add_special_tokens=False)["input_ids"],
                             SamplingParams(temperature=0, max_tokens=100))
    while engine.has_unfinished:
        engine.step()
    assert seq.finish_reason == "stop" and seq.output_token_ids  # ended on end-of-text, after some tokens
    assert seq.output_text == tokenizer.decode(seq.output_token_ids, skip_special_tokens=True) != ""


def test_tensor_parallel_size_is_accepted_as_vllm_spells_it():
    with pytest.raises(ValueError, match="tensor_parallel_size=2: the course engine runs on one device"):
        LLM(tensor_parallel_size=2)  # refused before any weight is loaded
    llm = LLM(tensor_parallel_size=1, num_blocks=16, block_size=8, max_model_len=64)
    assert llm.generate(["Hi"], SamplingParams(temperature=0, max_tokens=2))[0].outputs[0].token_ids
