"""Structured outputs: the from-scratch DFA against Python's re, its token masks against llguidance's,
and the engine's constrained generation (valid by construction, identical on both backends)."""

import json
import random
import re

import jsonschema
import pytest
import torch

from course_utils.architecture.transformer import Llama
from course_utils.serving import LLM, SamplingParams, StructuredOutputs
from course_utils.serving.structured import MatcherFactory
from course_utils.serving.token_dfa import compile_regex, flat_schema_regex

CONVERT = {"type": "object", "properties": {"unit": {"enum": ["km", "mi"]}, "value": {"type": "integer"},
                                             "exact": {"type": "boolean"}},
           "required": ["unit", "value", "exact"], "additionalProperties": False}
LOOKUP = {"type": "object", "properties": {"city": {"enum": ["Paris", "Lima", "Oslo", "New York"]},
                                            "field": {"enum": ["population", "area_km2"]}},
          "required": ["city", "field"], "additionalProperties": False}
REGEXES = ["(yes|no)", "-?(0|[1-9][0-9]*)", "[a-z]{2,5}( [a-z]+)?", "[0-9]{3}-[0-9]{4}",
           "(New York|Newark|[A-Z][a-z]{1,6})", "(ab|a)(bc|c)*d?", "[A-Fa-f0-9]{2}(:[A-Fa-f0-9]{2}){0,3}"]


@pytest.mark.parametrize("pattern", REGEXES + [flat_schema_regex(CONVERT)])
def test_the_dfa_accepts_exactly_what_python_re_fullmatches(pattern):
    dfa, rng = compile_regex(pattern), random.Random(0)
    alphabet = sorted(set(re.sub(r"[\\\[\]\(\)\{\}\|\*\+\?]", "", pattern)) | set("0123456789az -:\"{},"))
    samples = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    samples += ["yes", "no", "-0", "0", "-17", "ab", "abcd", "abcbcd", "ad", "New York", "Newark", "Ne", "a1:b2:c3",
                '{"unit":"km","value":-3,"exact":true}', '{"unit":"km","value":03,"exact":true}']
    for text in samples:
        assert dfa.matches(text.encode()) == (re.fullmatch(pattern, text) is not None), (pattern, text)


@pytest.mark.parametrize("pattern, problem", [("a.b", "not supported"), ("[^a]", "negated"), ("\\d+", "escape"),
                                              ("(ab", "missing )"), ("a{3,1}", "m <= n"), ("[é]", "ASCII")])
def test_a_regex_outside_the_subset_is_refused_in_one_line(pattern, problem):
    with pytest.raises(ValueError, match=re.escape(problem)) as err:
        compile_regex(pattern)
    assert "\n" not in str(err.value) and "llguidance" in str(err.value)


@pytest.mark.parametrize("schema", [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
                                     "additionalProperties": False},
                                    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": []},
                                    {"type": "array"}])
def test_a_schema_outside_the_flat_subset_is_refused(schema):
    with pytest.raises(ValueError, match="subset"):
        flat_schema_regex(schema)


@pytest.fixture(scope="module")
def factory(smollm2):
    _, tokenizer = smollm2
    return MatcherFactory(tokenizer, len(tokenizer))


SPECS = [{"regex": r} for r in REGEXES] + [{"choice": ["Paris", "New York", "São Paulo"]}, {"json": CONVERT},
                                             {"json": LOOKUP}, {"regex": flat_schema_regex(LOOKUP)}]


@pytest.mark.parametrize("spec", SPECS, ids=[json.dumps(s)[:40] for s in SPECS])
def test_the_course_masks_equal_llguidances_token_for_token_along_random_outputs(factory, spec):
    rng, eos = random.Random(1), factory.tokenizer.eos_token_id
    steps = 0
    for _ in range(12):
        theirs = factory.create(StructuredOutputs(**spec))
        ours = factory.create(StructuredOutputs(**spec, backend="course"))
        for _ in range(40):
            allowed = theirs.allowed()
            assert torch.equal(allowed, ours.allowed()), spec
            steps += 1
            ids = allowed.nonzero().flatten().tolist()
            others = [i for i in ids if i != eos]
            if not others or (eos in ids and rng.random() < 0.3):
                break
            token = rng.choice(others)
            theirs.consume(token)
            ours.consume(token)
    assert steps >= 30


def test_a_bad_structured_request_is_refused_in_one_line(factory):
    for kwargs in ({}, {"regex": "a", "choice": ["b"]}, {"json": "{not json"}, {"json": [1]}, {"choice": []},
                   {"regex": "a", "backend": "outlines"}):
        with pytest.raises(ValueError) as err:
            StructuredOutputs(**kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="does not compile"):
        factory.create(StructuredOutputs(regex="(unclosed"))
    with pytest.raises(ValueError, match="json_object or Lark"):
        factory.create(StructuredOutputs(json_object=True, backend="course"))
    with pytest.raises(ValueError, match="structured_outputs must be"):
        SamplingParams(structured_outputs={"json": CONVERT})


@pytest.fixture(scope="module")
def llm(smollm2):
    model, tokenizer = smollm2
    return LLM.from_model(Llama.from_hf(model), tokenizer, num_blocks=96, block_size=16, max_model_len=512)


def chat(llm, question: str) -> str:
    return llm.engine.tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                    add_generation_prompt=True)


QUESTIONS = ["Convert 5 miles to kilometres.", "How many kilometres is 12 miles?", "Turn 3 km into miles.",
             "What is the area of Oslo?", "Give me the population of Lima."]


def test_constrained_outputs_are_valid_json_where_free_ones_are_not(llm):
    prompts = [chat(llm, q + " Answer in JSON.") for q in QUESTIONS]
    free = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=48))
    constrained = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=48,
                                                       structured_outputs=StructuredOutputs(json=LOOKUP)))
    for out in constrained:
        completion = out.outputs[0]
        assert completion.finish_reason == "stop", completion.text
        jsonschema.validate(json.loads(completion.text), LOOKUP)

    def valid(text):
        try:
            jsonschema.validate(json.loads(text), LOOKUP)
            return True
        except (ValueError, jsonschema.ValidationError):
            return False
    assert not all(valid(out.outputs[0].text) for out in free)  # what the constraint is for


def test_both_backends_generate_the_same_tokens_greedy_and_seeded(llm):
    prompts = [chat(llm, q) for q in QUESTIONS[:3]]
    for params in ({"temperature": 0}, {"temperature": 1.0, "seed": 7, "n": 2}):
        runs = [llm.generate(prompts, SamplingParams(max_tokens=30, **params, structured_outputs=StructuredOutputs(
            json=CONVERT, backend=backend))) for backend in ("llguidance", "course")]
        tokens = [[[c.token_ids for c in out.outputs] for out in run] for run in runs]
        assert tokens[0] == tokens[1]


def test_choice_and_regex_constrain_the_engine_and_free_requests_beside_them_are_untouched(llm):
    prompts = [chat(llm, "Is water wet? Answer yes or no."), chat(llm, "Give a phone number.")]
    free_before = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=12))
    mixed = llm.generate(prompts + prompts, [
        SamplingParams(temperature=0, max_tokens=12, structured_outputs=StructuredOutputs(choice=["yes", "no"])),
        SamplingParams(temperature=0, max_tokens=12, structured_outputs=StructuredOutputs(regex="[0-9]{3}-[0-9]{4}")),
        SamplingParams(temperature=0, max_tokens=12), SamplingParams(temperature=0, max_tokens=12)])
    assert mixed[0].outputs[0].text in ("yes", "no")
    assert re.fullmatch("[0-9]{3}-[0-9]{4}", mixed[1].outputs[0].text)
    assert [o.outputs[0].text for o in mixed[2:]] == [o.outputs[0].text for o in free_before]
    assert not llm.engine._matchers  # every matcher went with its sequence
