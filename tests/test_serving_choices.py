"""n completions per request (forks sharing the prompt's KV blocks) and logprobs, against transformers."""

import pytest
import torch

from course_utils.architecture.transformer import Llama
from course_utils.serving import LLM, SamplingParams
from course_utils.serving.llm import request_output
from course_utils.serving.logprobs import token_bytes_table, token_logprobs

PROMPT = "Once upon a time, in a small village by the sea,"
OTHERS = ["The capital of France is", "def fibonacci(n):"]


@pytest.fixture(scope="module")
def course_model(smollm2):
    model, tokenizer = smollm2
    return Llama.from_hf(model), tokenizer


def make_llm(course_model, **engine_args) -> LLM:
    model, tokenizer = course_model
    return LLM.from_model(model, tokenizer, **({"num_blocks": 64, "block_size": 8, "max_model_len": 256}
                                               | engine_args))


def prompt_ids(tokenizer, text: str = PROMPT) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def reference_logprobs(smollm2, prompt: list[int], output: list[int]) -> torch.Tensor:
    """transformers' (T, V) log-probabilities of the next token at each output position, from one
    forward pass over prompt + output."""
    model, _ = smollm2
    with torch.no_grad():
        logits = model(torch.tensor([prompt + output])).logits[0, len(prompt) - 1:-1]
    return torch.log_softmax(logits.double(), dim=-1)


def chosen(completion) -> list:
    """The Logprob of each token the completion chose, in order."""
    return [entry[token] for token, entry in zip(completion.token_ids, completion.logprobs, strict=True)]


def assert_logprobs_match(completion, reference: torch.Tensor, k: int) -> None:
    """Each step's chosen token and top-k agree with transformers' distribution at that step."""
    assert len(completion.logprobs) == len(completion.token_ids) == reference.shape[0]
    for step, (token, entry) in enumerate(zip(completion.token_ids, completion.logprobs, strict=True)):
        ref = reference[step]
        assert entry[token].logprob == pytest.approx(float(ref[token]), abs=2e-3)
        # the rank counts the tokens more likely than the chosen one (a near-tie may fall either way)
        assert int((ref > ref[token] + 1e-3).sum()) + 1 <= entry[token].rank <= int((ref > ref[token] - 1e-3).sum()) + 1
        top = sorted((lp for lp in entry.values() if lp.rank <= k), key=lambda lp: lp.rank)
        assert len(top) == k and [lp.rank for lp in top] == list(range(1, k + 1))
        assert [lp.logprob for lp in top] == pytest.approx(torch.topk(ref, k).values.tolist(), abs=2e-3)
    assert completion.cumulative_logprob == pytest.approx(sum(lp.logprob for lp in chosen(completion)))


def test_greedy_logprobs_equal_transformers_transition_scores(smollm2, course_model):
    model, tokenizer = smollm2
    ids = prompt_ids(tokenizer)
    with torch.no_grad():
        generated = model.generate(torch.tensor([ids]), max_new_tokens=10, min_new_tokens=10, do_sample=False,
                                   output_scores=True, return_dict_in_generate=True)
    scores = model.compute_transition_scores(generated.sequences, generated.scores, normalize_logits=True)[0]
    out = make_llm(course_model).generate(PROMPT, SamplingParams(temperature=0, max_tokens=10, ignore_eos=True,
                                                                 logprobs=5))[0].outputs[0]
    assert out.token_ids == generated.sequences[0, len(ids):].tolist()
    assert [lp.logprob for lp in chosen(out)] == pytest.approx(scores.tolist(), abs=2e-3)
    assert all(lp.rank == 1 for lp in chosen(out))  # greedy: always the top token
    assert all(len(e) == 5 for e in out.logprobs)  # the chosen token is one of the top 5
    assert_logprobs_match(out, reference_logprobs(smollm2, ids, out.token_ids), k=5)


def test_sampled_logprobs_are_the_raw_model_distribution_not_the_sampling_one(smollm2, course_model):
    _, tokenizer = smollm2
    params = SamplingParams(temperature=1.5, top_k=40, seed=3, max_tokens=12, ignore_eos=True, logprobs=3)
    out = make_llm(course_model).generate(PROMPT, params)[0].outputs[0]
    assert_logprobs_match(out, reference_logprobs(smollm2, prompt_ids(tokenizer), out.token_ids), k=3)
    assert any(lp.rank > 1 for lp in chosen(out))  # at 1.5, not always the argmax
    assert all(len(e) in (3, 4) for e in out.logprobs)  # the top 3, and the chosen one when not among them


def test_n_forks_share_the_prompt_blocks_and_copy_only_the_partial_one(smollm2, course_model):
    _, tokenizer = smollm2
    llm = make_llm(course_model, block_size=8)
    engine, manager = llm.engine, llm.engine.manager
    ids = prompt_ids(tokenizer)
    full, partial = divmod(len(ids), 8)
    assert full >= 1 and partial  # the prompt ends inside a block: each fork needs its own copy of it
    root = engine.add_request(ids, SamplingParams(n=4, temperature=1.0, seed=0, max_tokens=6, ignore_eos=True,
                                                  logprobs=1))
    free_before = manager.num_free_blocks
    engine.step()  # the prefill: the prompt is computed once, then forked
    assert [f.index for f in root.forks] == [1, 2, 3]
    assert free_before - manager.num_free_blocks == full + 1 + 3  # the prompt's blocks + one partial copy per fork
    for fork in root.forks:
        assert fork.block_table[:full] == root.block_table[:full]
        assert fork.block_table[full] != root.block_table[full]
        src, dst = root.block_table[full], fork.block_table[full]
        for pool in (engine.runner.cache.k, engine.runner.cache.v):  # the copy holds the prompt's keys and values
            assert torch.equal(pool[:, dst * 8:dst * 8 + partial], pool[:, src * 8:src * 8 + partial])
    assert {manager.blocks[b].ref_count for b in root.block_table[:full]} == {4}
    while engine.has_unfinished:
        engine.step()
    outputs = request_output(root)
    assert outputs.finished and [o.index for o in outputs.outputs] == [0, 1, 2, 3]
    assert len({tuple(o.token_ids) for o in outputs.outputs}) > 1  # seeded draws that differ from one another
    for completion in outputs.outputs:  # each fork's shared and copied KV gave transformers' distribution
        assert_logprobs_match(completion, reference_logprobs(smollm2, ids, completion.token_ids), k=1)
    assert manager.num_free_blocks == len(manager.blocks) and not engine.requests


@pytest.mark.parametrize("engine_args", [{"max_num_seqs": 2},  # forks that find no room are prefilled later
                                         {"block_size": 4, "enable_prefix_caching": False},
                                         {"num_speculative_tokens": 3}])
def test_greedy_n_gives_n_copies_of_the_single_greedy_reply(course_model, engine_args):
    llm = make_llm(course_model, **engine_args)
    single = llm.generate(PROMPT, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=2))[0]
    many = llm.generate([PROMPT] + OTHERS, SamplingParams(n=3, temperature=0, max_tokens=12, ignore_eos=True,
                                                          logprobs=2))[0]
    assert [o.index for o in many.outputs] == [0, 1, 2]
    for o in many.outputs:
        assert o.token_ids == single.outputs[0].token_ids and o.text == single.outputs[0].text
        assert [lp.logprob for lp in chosen(o)] == pytest.approx([lp.logprob for lp in chosen(single.outputs[0])],
                                                                 abs=1e-4)
    assert llm.engine.manager.num_free_blocks == len(llm.engine.manager.blocks)


def test_seeded_n_is_reproducible_and_does_not_depend_on_the_batch(course_model):
    llm = make_llm(course_model)
    params = SamplingParams(n=3, temperature=1.0, seed=11, max_tokens=10, ignore_eos=True)
    alone = [o.token_ids for o in llm.generate(PROMPT, params)[0].outputs]
    batched = [o.token_ids for o in llm.generate([PROMPT] + OTHERS, [params] + [SamplingParams(seed=5)] * 2)[0].outputs]
    assert alone == batched
    first = llm.generate(PROMPT, SamplingParams(temperature=1.0, seed=11, max_tokens=10, ignore_eos=True))[0]
    assert first.outputs[0].token_ids == alone[0]  # completion 0 uses the seed itself, as with n=1


def test_aborting_an_n_request_frees_every_fork(smollm2, course_model):
    _, tokenizer = smollm2
    llm = make_llm(course_model)
    engine = llm.engine
    engine.add_request(prompt_ids(tokenizer), SamplingParams(n=5, max_tokens=50), request_id="many")
    engine.step()
    engine.step()
    assert engine.scheduler.running and engine.manager.num_free_blocks < len(engine.manager.blocks)
    engine.abort("many")
    assert not engine.requests and not engine.has_unfinished
    assert engine.manager.num_free_blocks == len(engine.manager.blocks)


def test_token_bytes_rebuild_a_reply_with_split_multibyte_characters(smollm2):
    _, tokenizer = smollm2
    text = "Café au lait ☕, naïve 🙂 emoji and 日本語 text"
    ids = prompt_ids(tokenizer, text)
    table = token_bytes_table(tokenizer)
    assert b"".join(table[i] for i in ids) == text.encode()
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some tokens hold half a character
    assert table[tokenizer.eos_token_id] == tokenizer.eos_token.encode()


def test_token_logprobs_checks_its_input():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    (entry,) = token_logprobs(logits, [0], k=1)
    assert entry[0].rank == 3 and entry[2].rank == 1
    assert entry[0].logprob == pytest.approx(float(torch.log_softmax(logits, -1)[0, 0]))
    with pytest.raises(ValueError, match="one row of logits per token"):
        token_logprobs(logits, [0, 1], k=1)


@pytest.mark.parametrize(("field", "value", "message"), [("n", 0, "n must be an integer >= 1"),
                                                         ("n", 2.0, "n must be an integer >= 1"),
                                                         ("logprobs", -1, "logprobs must be None or an integer"),
                                                         ("logprobs", True, "logprobs must be None or an integer")])
def test_bad_n_and_logprobs_are_refused_in_one_line(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**{field: value})
